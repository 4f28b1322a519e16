// Package dashboard serves tandem's web dashboard under /ui on the admin
// listener: every deployment with its mode, backend, revision and traffic
// share, instances by state, request rate, p50/p99 latency, cold starts by
// phase, queue depth, cost and what the other modes would have cost, and
// recent events, with charts over the last minutes.
//
// Who owns what: one goroutine (Run) takes a sample every second from the
// controller's status, the Prometheus registry and (every ten seconds) the
// cost meter, and appends it to a ring buffer of samples and one of events
// (derived by comparing a sample with the one before). A sample reuses the
// point of every deployment that has not changed since the one before
// (share), so a deployment that sits idle costs the history a map entry a
// sample rather than a copy. Readers (the HTTP handlers)
// take the mutex only to copy what they answer from. So a page opened
// fresh shows the last minutes, the page polls /ui/api/overview every
// second, and nothing on the request path does any work for the dashboard.
//
// The pages and uPlot (the charting library, see package uplot) are
// embedded; the dashboard loads nothing from elsewhere.
package dashboard
