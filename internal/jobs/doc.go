// Package jobs runs tandem's asynchronous invocations: a request to a
// deployment that is answered 202 with a job id once it is durably stored,
// and run later through the gateway's own pipeline (queue, activator,
// autoscaler, tenants' limits and budgets, metering), retried with
// exponential backoff, its result kept for GET /v1/jobs/{id} and POSTed to
// the deployment's destinations (docs/async.md).
//
// Who owns what:
//   - The store (jobs.db under the data directory, bbolt) is the truth: a
//     job is accepted only after its record is committed, and every change
//     of state (an attempt starts, ends, the job is pruned) is a commit
//     before anything depends on it. After a crash, every job stored as
//     queued or running is queued again: delivery is at least once, and
//     the function gets X-Tandem-Job-Id to tell repeats apart.
//   - The Manager's dispatcher goroutine (Run) owns the in-memory queues:
//     per deployment a heap of job ids by due time and a count of attempts
//     running, bounded by Config.PerModel so a backlog of jobs never floods
//     the activator's max_queue. Submit and finished attempts only push
//     under the mutex and poke the dispatcher.
//   - Each attempt runs on its own goroutine: it replays the stored
//     request through the gateway's http.Handler in-process, marked with
//     gateway.WithJob (a context value the outside cannot send) so the
//     admission stages take it as the stored tenant without a key.
//   - What to do after an attempt is decided by pure functions of the
//     policy, the job and the time (policy.go), tested on a stepped clock.
package jobs
