// Package cost prices what deployments use: a price table (Prices, with
// defaults from public list prices, see prices/default.yaml and
// docs/cost.md) and a meter that measures every deployment as it runs.
//
// # What is measured
//
// Instance-seconds by state: starting (from the decision to start an
// instance until it is ready), busy (ready with at least one request in
// flight) and idle (ready, or draining, with nothing in flight); requests,
// their total duration and how many waited for a cold start; and the floor,
// the instance time a dedicated deployment of the same size keeps warm at
// least. Each is also weighted by the instance's size (vCPU-, GiB- and
// GPU-seconds), so a price per vCPU-hour or GB-second applies directly.
//
// # How it is priced
//
// Dedicated pays for every second its instances run. Serverless pays for
// instance time while serving (and starting), and a fee per request; idle
// warm instances are free to the user, as on Lambda or Cloud Run. A
// deployment's report shows what it paid under its own mode and what the
// same traffic would have cost under the other (Prices.CostIf).
//
// # Who owns what
//
//   - The controller's per-deployment loops report settings (Deployment,
//     DeploymentDeleted) and instance state changes (InstanceStarting,
//     InstanceReady, InstanceGone) with the time they happened. These take
//     the meter's mutex briefly and never touch the disk.
//   - The request path adds to a RequestCounter (atomics only), and each
//     ready instance carries a busy clock the meter reads (BusyReader), so
//     no request takes a lock or calls the meter.
//   - Flush (called by Run each second, and before every reading) turns
//     elapsed time into usage per minute bucket and takes the request
//     counts. Persist (every few seconds, from Run, and at Close) moves
//     those buckets to dir/cost.db; persistMu keeps a report from reading
//     while a batch is neither in memory nor on disk.
//   - Reports read the file and the buckets not yet written; Live returns
//     the totals since the meter started, which Prometheus and tools that
//     measure a stretch of time (tandem bench) read.
package cost
