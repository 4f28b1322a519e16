package pool

// Who owns what
//
//   - The controller's per-deployment loop owns membership: it calls Add when
//     an instance passes its readiness probe, Remove before draining or after
//     a death, Fail when a start failed and nothing else is coming, and Close
//     on delete. Membership writes copy the snapshot and swap it under mu.
//   - The request path (Acquire, Release) never takes a lock when an instance
//     has room: it reads the snapshot, picks the least-loaded instance and
//     takes a slot with a compare-and-swap on that instance's counter.
//   - Waiters live in a FIFO under mu. A waiter counts itself in `queued`
//     before its last look for room; Release decrements the instance counter
//     before it reads `queued`. With both sides using sequentially consistent
//     atomics, either the waiter sees the free slot or the releaser sees the
//     waiter and dispatches: no request is stranded with room available.
//   - Draining sets a flag, then waits for the counter to reach zero; a slot
//     taken concurrently re-checks the flag after the increment and backs
//     out, so a drained instance is never handed a new request.
//   - Concurrency (in flight + queued) is integrated over time under a small
//     mutex so the autoscaler sees time-weighted averages, not point samples
//     that miss short requests between ticks.
