// Package autoscaler decides how many instances a deployment should have,
// in the style of Knative's KPA. It only decides: a controller elsewhere
// observes traffic, calls Decide on each tick and applies the result.
// Nothing here starts a goroutine or reads a clock; time is a parameter
// everywhere, so tests step a clock instead of sleeping.
//
// # Who owns what
//
//   - Window is owned by the controller's loop for one deployment (it is not
//     safe for concurrent use). The loop samples concurrency (in flight plus
//     queued) and Records it; Average over the stable and the panic window
//     gives Metrics.StableConcurrency and Metrics.PanicConcurrency. One
//     Window sized for the stable window answers both.
//   - State is the only memory Decide has: when panic mode began and the
//     largest size asked for since. The caller keeps the State that Decide
//     returns and passes it back on the next call; the zero State starts
//     afresh (after a restart, panic mode is simply re-entered if the
//     burst is still there).
//   - Decide is a pure function of Params, State, Metrics and now. It does
//     not allocate, so calling it on every tick for every deployment costs
//     nothing worth measuring; Decision.String formats the numbers for logs
//     and status only when someone asks.
//
// # The rules
//
// The stable window decides: ceil(stable concurrency / target). When the
// panic window's concurrency per ready instance reaches PanicThreshold
// times the target, panic mode begins: the size follows the panic window
// and never goes down until the burst is no longer over the threshold and
// a whole stable window has passed since panic began, by which time the
// stable average has seen the burst. A queued request always means at
// least one instance. Min and Max clamp the result last.
//
// # Why the idle timeout overrides the stable average for scale to zero
//
// The stable average decays slowly: one request that took a second keeps
// the 60 s average above zero, and so ceil(average/target) at 1, for a whole
// minute after it ended, however long idle_timeout is. Letting the average
// decide would make idle_timeout mean "idle_timeout or the stable window,
// whichever is longer", and, once at zero, the same leftover average would
// start an instance again with nobody waiting. So for a scale-to-zero
// deployment the facts that are exact win over the average: with nothing
// in flight or queued, idle_timeout since the last activity means zero
// (this ends a panic too, since panic guards against a noisy signal and
// there is no signal left), and an empty deployment with no demand stays
// at zero. Before the timeout, a deployment with instances keeps at least
// one, so that a brief lull between requests does not cost a cold start.
//
// Unlike Knative, panic mode is not extended each time the threshold is
// crossed again: it ends a stable window after it began, once the panic
// window is back under the threshold.
package autoscaler
