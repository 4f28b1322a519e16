// Package lambda runs AWS Lambda functions unchanged: it serves each
// function instance the Lambda Runtime API from inside the tandem process
// and turns the requests the gateway forwards into Lambda events.
//
// Wrap is a backend decorator (around the process backend, in
// internal/server): for a spec with runtime.lambda, Start opens two
// loopback listeners, the instance's Runtime API (AWS_LAMBDA_RUNTIME_API)
// and its ingress (the instance's address), and starts the program that a
// controller.Runtime put in runtime.command (Runtime for a custom
// runtime's command; a handler's runtime for Python). Other specs pass
// straight through.
//
// # Who owns what
//
//   - Backend.mu guards the map of function instances and each one's
//     recorded Exit and Wait channels. One watcher goroutine per instance
//     waits on the wrapped backend's Wait, ends the function (listeners,
//     pending event) and delivers the Exit, with the reason tandem stopped
//     it if it did (backend.Exit.Reason).
//   - A function (function.go) owns one instance's events: the ingress
//     takes its one slot before reading a request, builds the event and
//     hands it over an unbuffered channel to the pending GET /next; from
//     then the Runtime API side owns it until /response, /error, the
//     deadline's timer or the exit completes it, exactly once, which frees
//     the slot. function.mu guards the pending event and the reasons.
//   - Markers under Config.Dir exist while a function instance may run, so
//     that Recover in the next tandem process stops what it cannot serve.
//
// The Invoke API door is in internal/gateway (invoke.go); it marks a raw
// invocation with InvokeHeader set to InvokeToken, a secret of this
// process.
package lambda
