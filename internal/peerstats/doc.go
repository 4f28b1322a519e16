// Package peerstats carries autoscaling stats between the tandem processes
// that share one replica platform (several tandem pods on one Kubernetes
// cluster), so that the one that changes replica counts (the lease holder)
// decides on everyone's traffic, not on its own share of it. Knative's
// activators report to its autoscaler for the same reason.
//
// Who sends what to whom:
//   - Every process's deployment loops call Observe once per tick with the
//     pool's time-weighted concurrency for that tick (controller.PeerStats).
//     Observe only adds to a per-deployment integral under a mutex.
//   - The Reporter's goroutine (Run), every Interval, swaps the integrals
//     out and, unless this process leads or no leader is known, POSTs them
//     as one Report (every deployment, one concurrency each: the integral
//     over its time) to the leader's peer address, path Path, with the
//     admin bearer token. One request per interval, whatever the traffic;
//     a failed post is dropped, never retried (the next one supersedes it).
//   - The Collector is the leader's handler for Path, mounted on the admin
//     listener behind its token check. It keeps each peer's latest report,
//     stamped with its own clock at receipt. Remote sums, over the peers
//     whose report is younger than Expiry, what each reported for a
//     deployment. A peer's value is held until it expires, so a few lost
//     reports (a slow leader, a leader change the followers learn of one
//     lease retry later) do not look like a drop in traffic and never scale
//     a deployment down; a dead follower stops counting after Expiry.
//
// Tenants: with a Ledger (the tenant registry), every report also carries
// this process's spend per tenant over each tenant's budget period, is
// sent every interval even with no traffic, and asks for a Reply: the
// number of live processes and, per tenant, everyone else's spend, which
// the ledger uses to split rates and concurrency quotas and to check
// budgets cluster-wide. The leader records its own spend in its collector
// (SetOwn) and reads its own Reply there. Spend does not expire with a
// report: a process that is gone still spent it; it goes when its period
// ends.
//
// Who owns what: the Reporter's integrals belong to its mutex (held for a
// map update by Observe, for a swap by the report); the Collector's peers
// belong to its mutex (held for a map update by a post, for a sum by
// Remote). Neither is held during I/O.
package peerstats
