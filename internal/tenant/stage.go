package tenant

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/gateway"
	"tandem/internal/problem"
)

// Error codes of the gateway's refusals.
const (
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
	CodeRateLimited     = "rate_limited"
	CodeQuotaExceeded   = "quota_exceeded"
	CodeBudgetExceeded  = "budget_exceeded"
)

// Stage is the gateway's authentication stage (`tandem serve --auth keys`):
// every request on every door must carry a tenant's key, and is refused
// before anything is queued or woken when the key is missing, unknown,
// revoked or expired (401), the model is not the tenant's (403), or the
// tenant is over its rate, concurrency or budget (429, with Retry-After for
// the rate and the budget). Admitted requests are metered to the tenant.
type Stage struct {
	r       *Registry
	metrics *metrics
}

// NewStage returns the stage over r; reg (may be nil) receives the
// per-tenant metrics.
func NewStage(r *Registry, reg prometheus.Registerer) *Stage {
	return &Stage{r: r, metrics: newMetrics(r, reg)}
}

var _ gateway.Stage = (*Stage)(nil)

// credential reads the key from Authorization: Bearer or X-API-Key (gRPC
// metadata arrives as the same headers).
func credential(h http.Header) string {
	if a := h.Get("Authorization"); a != "" {
		if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return strings.TrimSpace(h.Get("X-Api-Key"))
}

func unauthenticated(msg string) *problem.Error {
	return problem.New(http.StatusUnauthorized, CodeUnauthenticated, msg)
}

// errUnknown is one answer for a malformed, unknown, revoked or wrong key:
// a caller learns nothing about which.
func errUnknown() *problem.Error {
	return unauthenticated("the API key is not valid (unknown or revoked)")
}

// Admit authenticates the exchange and applies the tenant's limits. An
// attempt of an asynchronous job (gateway.JobFrom: a context value, which
// no client can send) is taken as the tenant that submitted it, whose key
// was checked then; its limits and budget apply as to any request.
func (st *Stage) Admit(ctx context.Context, ex *gateway.Exchange) error {
	var s *state
	now := st.r.Now()
	if job, ok := gateway.JobFrom(ctx); ok {
		if s = st.r.snap.Load().tenants[job.Tenant]; s == nil {
			return problem.New(http.StatusForbidden, CodeForbidden,
				fmt.Sprintf("job %s was submitted by tenant %q, which no longer exists", job.ID, job.Tenant))
		}
	} else {
		key := credential(ex.Header)
		if key == "" {
			return unauthenticated("an API key is required: send Authorization: Bearer KEY or X-API-Key: KEY")
		}
		ks, err := st.r.authenticate(key)
		if err != nil {
			return err
		}
		// The key is tandem's: the model's code must not see it (and cannot
		// log it, or call other models as the tenant).
		ex.Header.Del("Authorization")
		ex.Header.Del("X-Api-Key")
		if exp := ks.k.Expires; !exp.IsZero() && !now.Before(exp) {
			return unauthenticated(fmt.Sprintf("API key %s expired at %s", ks.k.ID, exp.Format(time.RFC3339)))
		}
		ks.lastUsed.Store(now.UnixNano())
		s = ks.t
	}
	t := s.t.Load()
	ex.Tenant = t.Name
	if len(t.Models) > 0 && !slices.Contains(t.Models, ex.Model) {
		return problem.New(http.StatusForbidden, CodeForbidden,
			fmt.Sprintf("tenant %q may not call model %q", t.Name, ex.Model))
	}
	if t.Budget > 0 {
		s.roll(now)
		if spent := float64(s.periodNano.Load()+s.othersNano()) / 1e9; spent >= t.Budget {
			e := problem.New(http.StatusTooManyRequests, CodeBudgetExceeded,
				fmt.Sprintf("tenant %q has spent $%.6f of its $%g budget", t.Name, spent, t.Budget))
			if end := s.periodEnd(); !end.IsZero() {
				e.Message += " for the period ending " + end.UTC().Format(time.RFC3339)
				e.RetryAfter = end.Sub(now)
			}
			return e
		}
	}
	if t.Concurrency > 0 {
		limit := concurrencyShare(t.Concurrency, st.r.replicas.Load())
		if n := s.flight.Add(1); n > limit {
			s.flight.Add(-1)
			msg := fmt.Sprintf("tenant %q has %d requests in flight, its limit", t.Name, t.Concurrency)
			if limit < int64(t.Concurrency) {
				msg = fmt.Sprintf("tenant %q has %d requests in flight at this tandem replica, its share of its limit of %d",
					t.Name, limit, t.Concurrency)
			}
			return problem.New(http.StatusTooManyRequests, CodeQuotaExceeded, msg)
		}
		ex.OnFinish(func(*gateway.Exchange, gateway.Result) { s.flight.Add(-1) })
	} else {
		s.flight.Add(1)
		ex.OnFinish(func(*gateway.Exchange, gateway.Result) { s.flight.Add(-1) })
	}
	if l := s.limiter.Load(); l != nil {
		res := l.ReserveN(now, 1)
		if d := res.DelayFrom(now); !res.OK() || d > 0 {
			res.CancelAt(now)
			e := problem.New(http.StatusTooManyRequests, CodeRateLimited,
				fmt.Sprintf("tenant %q is over its rate of %s", t.Name, t.Rate))
			e.RetryAfter = d
			if !res.OK() || d == math.MaxInt64 {
				e.RetryAfter = t.Rate.Per
			}
			return e
		}
	}
	ex.OnFinish(st.account(s))
	return nil
}

// authenticate finds the key's record. The secret is compared as SHA-256
// digests in constant time, so how long a refusal takes does not depend on
// how much of a guessed key is right.
func (r *Registry) authenticate(key string) (*keyState, error) {
	id, secret, err := ParseKey(key)
	if err != nil {
		return nil, errUnknown()
	}
	h := sha256.Sum256(secret)
	ks, ok := r.snap.Load().keys[id]
	if !ok {
		subtle.ConstantTimeCompare(h[:], h[:]) // the same work as a known id
		return nil, errUnknown()
	}
	if subtle.ConstantTimeCompare(h[:], ks.k.Hash) != 1 {
		return nil, errUnknown()
	}
	return ks, nil
}

// account returns the finish hook that meters a request to s: requests and
// busy time of those an instance took, priced as serverless at the
// deployment's size.
func (st *Stage) account(s *state) func(*gateway.Exchange, gateway.Result) {
	return func(ex *gateway.Exchange, res gateway.Result) {
		st.metrics.request(s.t.Load().Name, ex.Model, res.Status)
		if !res.Served {
			return
		}
		size := st.r.prices.SizeOf(ex.Deployment.Manifest().Resources)
		p := st.r.prices.Serverless
		usd := p.PerMillionRequests/1e6 + res.Took.Seconds()*(size.GB*p.GBSecond+size.GPUs*p.GPUSecond)
		nano := int64(math.Round(usd * 1e9))
		s.roll(st.r.Now())
		s.requests.Add(1)
		s.busyNanos.Add(int64(res.Took))
		s.spendNano.Add(nano)
		s.periodNano.Add(nano)
	}
}
