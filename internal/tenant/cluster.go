package tenant

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Limits across tandem replicas. Several tandem processes behind one
// Service share each tenant's limits without a call between them per
// request: each enforces a share of the rate and of the concurrency
// quota, 1/N of it where N is the number of live processes, and checks
// the budget against the whole cluster's spend as last reported plus its
// own. N and the others' spend come from the peer stats (the leader's
// reply to each follower's report, once per tick); see docs/tenants.md
// for the error bounds.

// rateShare is a rate's bucket at one of replicas processes: the rate
// divided by replicas, and the burst too, rounded up to at least one
// request (a tenant allowed one request per period must get it through
// whichever replica it reaches). Across replicas the bursts add up to at
// most the burst plus replicas-1.
func rateShare(r Rate, replicas int64) (rate.Limit, int) {
	if replicas < 1 {
		replicas = 1
	}
	burst := int((int64(r.N) + replicas - 1) / replicas)
	return rate.Limit(r.PerSecond() / float64(replicas)), max(burst, 1)
}

// concurrencyShare is a concurrency quota's share at one of replicas
// processes, rounded up to at least one: across replicas at most the
// quota plus replicas-1 are in flight.
func concurrencyShare(quota int, replicas int64) int64 {
	if replicas < 1 {
		replicas = 1
	}
	return max((int64(quota)+replicas-1)/replicas, 1)
}

// othersNano is what the other processes spent in s's current period.
func (s *state) othersNano() int64 {
	o := s.others.Load()
	if o == nil || o.period != s.periodStart.Load() {
		return 0
	}
	return o.nano
}

// PeriodSpend is one tenant's spend over its budget period that began at
// Period; Until is when it ends (zero: the tenant's lifetime).
type PeriodSpend struct {
	Tenant        string
	Period, Until time.Time
	USD           float64
}

// Replicas is the number of tandem processes the limits are split over.
func (r *Registry) Replicas() int { return int(r.replicas.Load()) }

// Spend returns this process's own spend in each tenant's current budget
// period, for the tenants that have spent anything in it.
func (r *Registry) Spend(now time.Time) []PeriodSpend {
	var out []PeriodSpend
	for name, s := range r.snap.Load().tenants {
		s.roll(now)
		n := s.periodNano.Load()
		if n <= 0 {
			continue
		}
		ps := PeriodSpend{Tenant: name, Period: time.Unix(0, s.periodStart.Load()), USD: float64(n) / 1e9}
		if end := s.periodEnd(); !end.IsZero() {
			ps.Until = end
		}
		out = append(out, ps)
	}
	return out
}

// Cluster takes what the peer stats' leader says: the number of live
// tandem processes (each enforces 1/replicas of every rate and quota from
// now on) and, per tenant, what the other processes spent in a budget
// period. A figure for a period other than the tenant's current one is
// kept only when it is newer; within a period it never goes down (a new
// leader that has not heard from a gone process yet does not reopen a
// spent budget).
func (r *Registry) Cluster(replicas int, others []PeriodSpend) {
	if replicas < 1 {
		replicas = 1
	}
	if old := r.replicas.Swap(int64(replicas)); old != int64(replicas) {
		r.mu.Lock()
		now := r.Now()
		for _, s := range r.snap.Load().tenants {
			s.setRate(s.t.Load().Rate, int64(replicas), now)
		}
		r.mu.Unlock()
		r.log.Info("tenant limits split across tandem replicas", "replicas", replicas, "was", old)
	}
	sn := r.snap.Load()
	for _, o := range others {
		s := sn.tenants[o.Tenant]
		if s == nil || o.USD < 0 || math.IsNaN(o.USD) {
			continue
		}
		next := &otherSpend{period: o.Period.UnixNano(), nano: int64(math.Round(o.USD * 1e9))}
		for {
			cur := s.others.Load()
			if cur != nil && (next.period < cur.period || next.period == cur.period && next.nano <= cur.nano) {
				break
			}
			if s.others.CompareAndSwap(cur, next) {
				break
			}
		}
	}
}
