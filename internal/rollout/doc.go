// Package rollout decides a progressive (Flagger-style) rollout of a new
// revision: its share of traffic grows step by step while its error rate
// and p99 latency, measured on its own traffic, stay within the manifest's
// thresholds; after Config.Failures consecutive bad intervals all traffic
// goes back to the previous revision and the rollout is marked failed.
//
// # Who owns what
//
//   - Stats is owned by the gateway, one per revision. Observe runs on the
//     request path from any goroutine: it is one or two atomic adds, no lock
//     and no allocation. Cold requests (those that waited for an instance to
//     start) are counted apart and kept out of the latency histogram, so a
//     scale from zero does not fail a rollout on p99. They still count as
//     requests and their 5xx still count as errors.
//   - Snapshot is a plain value: cumulative counters read from a Stats.
//     Snapshot.Sub gives the window between two of them.
//   - State is the rollout's only memory, including the baseline snapshot
//     the next window is measured from. The controller stores it (it
//     round-trips through encoding/json) and passes it back on each tick.
//   - Evaluate is a pure function of State, Config, the revision's
//     cumulative Snapshot and now. It never reads a clock, starts a
//     goroutine or mutates its arguments; the controller applies the weight
//     it returns.
//
// # The rules
//
// An interval is judged once at least Config.Interval has passed since
// State.IntervalStart (a late tick judges the whole, longer window once).
// An interval with fewer than MinRequests requests is held: it is neither
// good nor bad and a new interval starts. A bad interval (error rate above
// MaxErrorRate, or p99 above MaxP99) adds one to Failures; at
// Config.Failures the rollout fails with weight 0 and a reason naming the
// metric, its value and the threshold. A good interval resets Failures and
// moves to the next step.
//
// Latency is known to a bucket about 10% wide, so p99 counts as above
// MaxP99 only when its whole bucket is above the one MaxP99 falls in: a
// revision just under the threshold is never rolled back for bucketing,
// and one less than a bucket over may pass.
//
// Reaching weight 100 is not success yet: as in Flagger, the revision must
// also pass one interval at 100% before the rollout succeeds, so a revision
// that only breaks under full traffic is still rolled back. A healthy
// rollout with steps [10 25 50 100] therefore takes four intervals.
//
// If the revision's counters went backwards (the gateway restarted and its
// Stats began again from zero), the window is the new snapshot itself: all
// of it was counted after the baseline was taken.
package rollout
