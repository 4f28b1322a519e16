// Package shadow mirrors a share of a model's requests to another revision
// and counts how the shadow's answers compare with the primary's.
//
// The caller only ever sees the primary's answer. Shadow copies run on a
// bounded pool of workers fed by a bounded queue; Submit never blocks and
// drops the copy when the queue is full, so a slow or hanging shadow
// revision can never delay or fail primary requests.
//
// Who owns what:
//   - The gateway decides whether to mirror, builds a Copy (its Send does the
//     shadow request), streams the primary's answer through a Digest and
//     reports it to the Pair that Submit returned.
//   - A worker owns a Copy from the moment it takes it off the queue: it calls
//     Send under a context bounded by Copy.Timeout and canceled by Close, and
//     hashes the shadow's body as it reads it (never buffering it).
//   - A Pair's two sides meet through one atomic word: each side stores its
//     result, then sets its bit; the side that sees the other's bit already
//     set records the verdict. So exactly one verdict is recorded, in either
//     order, without a lock. A shadow that fails is counted as an error as
//     soon as it fails: there is nothing to compare.
//   - Per-(model, revision) counters live in a series, looked up once per
//     Submit under a read lock; the Prometheus children are resolved when the
//     series is made, so recording a verdict is a few atomic adds.
package shadow
