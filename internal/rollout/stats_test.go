package rollout

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBounds(t *testing.T) {
	if bounds[0] != time.Millisecond {
		t.Errorf("first bound %s, want 1ms", bounds[0])
	}
	if last := bounds[len(bounds)-1]; last < 60*time.Second || last > 70*time.Second {
		t.Errorf("last finite bound %s, want about 60s", last)
	}
	for i := 1; i < len(bounds); i++ {
		r := float64(bounds[i]) / float64(bounds[i-1])
		if r < 1.09 || r > 1.11 {
			t.Errorf("bound %d/%d ratio %.4f, want about 1.1", i, i-1, r)
		}
	}
	if BucketBound(NBuckets-1) != Overflow {
		t.Errorf("last bucket bound %d, want Overflow", BucketBound(NBuckets-1))
	}
	// 500 ms and 600 ms (and 550 ms) land in different buckets.
	if a, b, c := bucketOf(500*time.Millisecond), bucketOf(550*time.Millisecond), bucketOf(600*time.Millisecond); a == b || b == c {
		t.Errorf("buckets of 500ms, 550ms, 600ms: %d %d %d, want all different", a, b, c)
	}
}

func TestBucketOf(t *testing.T) {
	tests := []struct {
		name string
		d    time.Duration
		want int
	}{
		{"negative", -time.Second, 0},
		{"zero", 0, 0},
		{"1ms is in the first bucket", time.Millisecond, 0},
		{"just over 1ms", time.Millisecond + 1, 1},
		{"on bound 40", bounds[40], 40},
		{"just over bound 40", bounds[40] + 1, 41},
		{"on the last finite bound", bounds[len(bounds)-1], len(bounds) - 1},
		{"just over it", bounds[len(bounds)-1] + 1, NBuckets - 1},
		{"an hour", time.Hour, NBuckets - 1},
		{"max", Overflow, NBuckets - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bucketOf(tt.d); got != tt.want {
				t.Errorf("bucketOf(%s) = %d, want %d", tt.d, got, tt.want)
			}
		})
	}
	// Against a linear scan, on and around every bound.
	for i, b := range bounds {
		for _, d := range []time.Duration{b - 1, b, b + 1} {
			want := slices.IndexFunc(bounds[:], func(x time.Duration) bool { return d <= x })
			if want < 0 {
				want = NBuckets - 1
			}
			if got := bucketOf(d); got != want {
				t.Errorf("bound %d: bucketOf(%d) = %d, want %d", i, d, got, want)
			}
		}
	}
}

func TestStats_ObserveConcurrent(t *testing.T) {
	const goroutines, each = 8, 20000
	// Request j of every goroutine: status, latency and coldness from j.
	req := func(j int) (int, time.Duration, bool) {
		status := 200
		if j%10 == 0 {
			status = 503
		}
		return status, time.Duration(j%300) * 7 * time.Millisecond, j%25 == 0
	}
	var want Snapshot
	for j := range each {
		status, took, cold := req(j)
		want.Requests++
		if status >= 500 {
			want.Errors++
		}
		if cold {
			want.Cold++
		} else {
			want.Buckets[bucketOf(took)]++
		}
	}
	want.Requests *= goroutines
	want.Errors *= goroutines
	want.Cold *= goroutines
	for i := range want.Buckets {
		want.Buckets[i] *= goroutines
	}

	s := NewStats()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for j := range each {
				s.Observe(req(j))
			}
		})
	}
	// Snapshots taken during the run must be consistent.
	for range 100 {
		snap := s.Snapshot()
		if snap.Errors > snap.Requests || snap.Cold+snap.Warm() != snap.Requests {
			t.Fatalf("inconsistent snapshot mid-run: %d requests, %d errors, %d cold, %d warm",
				snap.Requests, snap.Errors, snap.Cold, snap.Warm())
		}
	}
	wg.Wait()
	if got := s.Snapshot(); got != want {
		t.Errorf("Snapshot: %d requests, %d errors, %d cold (buckets equal: %v), want %d, %d, %d",
			got.Requests, got.Errors, got.Cold, got.Buckets == want.Buckets, want.Requests, want.Errors, want.Cold)
	}
}

func TestStats_Observe(t *testing.T) {
	tests := []struct {
		name                       string
		status                     int
		took                       time.Duration
		cold                       bool
		requests, errors, coldN, w int64
	}{
		{"warm 200", 200, 20 * time.Millisecond, false, 1, 0, 0, 1},
		{"warm 404 is not an error", 404, time.Millisecond, false, 1, 0, 0, 1},
		{"warm 500", 500, time.Millisecond, false, 1, 1, 0, 1},
		{"warm 504", 504, time.Minute, false, 1, 1, 0, 1},
		{"cold 200 stays out of the histogram", 200, 9 * time.Second, true, 1, 0, 1, 0},
		{"cold 503 is an error", 503, 30 * time.Second, true, 1, 1, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStats()
			s.Observe(tt.status, tt.took, tt.cold)
			got := s.Snapshot()
			if got.Requests != tt.requests || got.Errors != tt.errors || got.Cold != tt.coldN || got.Warm() != tt.w {
				t.Errorf("got %d requests, %d errors, %d cold, %d warm; want %d, %d, %d, %d",
					got.Requests, got.Errors, got.Cold, got.Warm(), tt.requests, tt.errors, tt.coldN, tt.w)
			}
			if tt.cold && got.Quantile(0.99) != 0 {
				t.Errorf("a cold request moved p99 to %s", got.Quantile(0.99))
			}
		})
	}
}

func TestStats_ObserveAllocs(t *testing.T) {
	s := NewStats()
	if n := testing.AllocsPerRun(1000, func() { s.Observe(500, 123*time.Millisecond, false) }); n != 0 {
		t.Errorf("Observe allocates %v times, want 0", n)
	}
}

func TestSnapshot_Sub(t *testing.T) {
	s := NewStats()
	s.Observe(200, 5*time.Millisecond, false)
	s.Observe(500, 5*time.Millisecond, true)
	before := s.Snapshot()
	s.Observe(200, 5*time.Millisecond, false)
	s.Observe(502, 700*time.Millisecond, false)
	s.Observe(200, 2*time.Second, true)
	after := s.Snapshot()

	var want Snapshot
	want.Requests, want.Errors, want.Cold = 3, 1, 1
	want.Buckets[bucketOf(5*time.Millisecond)] = 1
	want.Buckets[bucketOf(700*time.Millisecond)] = 1
	if got := after.Sub(before); got != want {
		t.Errorf("Sub = %+v, want %+v", got, want)
	}
	if got := after.Sub(after); got != (Snapshot{}) {
		t.Errorf("s.Sub(s) = %+v, want zero", got)
	}
	if got := after.Sub(Snapshot{}); got != after {
		t.Errorf("s.Sub(zero) = %+v, want s", got)
	}
}

func TestSnapshot_ErrorRate(t *testing.T) {
	tests := []struct {
		name             string
		requests, errors int64
		want             float64
	}{
		{"no requests", 0, 0, 0},
		{"no errors", 10, 0, 0},
		{"ten percent", 1000, 100, 0.1},
		{"all", 3, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Snapshot{Requests: tt.requests, Errors: tt.errors}
			if got := s.ErrorRate(); got != tt.want {
				t.Errorf("ErrorRate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSnapshot_Quantile(t *testing.T) {
	one := func(ds ...time.Duration) Snapshot {
		s := NewStats()
		for _, d := range ds {
			s.Observe(200, d, false)
		}
		return s.Snapshot()
	}
	hundred := make([]time.Duration, 100) // 99 fast, 1 slow
	for i := range hundred {
		hundred[i] = 10 * time.Millisecond
	}
	hundred[99] = 3 * time.Second
	tests := []struct {
		name string
		snap Snapshot
		q    float64
		want time.Duration
	}{
		{"empty", Snapshot{}, 0.99, 0},
		{"only cold requests", Snapshot{Requests: 5, Cold: 5}, 0.99, 0},
		{"one request", one(500 * time.Millisecond), 0.99, BucketBound(bucketOf(500 * time.Millisecond))},
		{"p99 of 99 fast and 1 slow is fast", one(hundred...), 0.99, BucketBound(bucketOf(10 * time.Millisecond))},
		{"p100 is the slow one", one(hundred...), 1, BucketBound(bucketOf(3 * time.Second))},
		{"q above 1 is the max", one(hundred...), 7, BucketBound(bucketOf(3 * time.Second))},
		{"q 0 is the min", one(hundred...), 0, BucketBound(bucketOf(10 * time.Millisecond))},
		{"NaN is the min", one(hundred...), math.NaN(), BucketBound(bucketOf(10 * time.Millisecond))},
		{"past the last bucket", one(2 * time.Minute), 0.5, Overflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.snap.Quantile(tt.q); got != tt.want {
				t.Errorf("Quantile(%v) = %s, want %s", tt.q, got, tt.want)
			}
		})
	}
	if a, b := one(500*time.Millisecond).Quantile(0.99), one(600*time.Millisecond).Quantile(0.99); a >= b || a < 500*time.Millisecond || b < 600*time.Millisecond {
		t.Errorf("p99 of 500ms = %s, of 600ms = %s: not told apart", a, b)
	}
}

// TestSnapshot_QuantileReference checks Quantile against the exact quantile
// of a sorted slice: the bucket's upper bound is at least the true value,
// and the true value is above the bucket's lower bound (within one bucket).
func TestSnapshot_QuantileReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	logUniform := func(lo, hi time.Duration) func() time.Duration {
		return func() time.Duration {
			l := math.Log(float64(lo)) + rng.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))
			return time.Duration(math.Exp(l))
		}
	}
	dists := []struct {
		name string
		n    int
		gen  func() time.Duration
	}{
		{"log-uniform 100us..50s", 10000, logUniform(100*time.Microsecond, 50*time.Second)},
		{"normal around 500ms", 5000, func() time.Duration {
			return max(0, time.Duration((500+rng.NormFloat64()*50)*float64(time.Millisecond)))
		}},
		{"exponential mean 80ms", 2000, func() time.Duration {
			return time.Duration(rng.ExpFloat64() * 80 * float64(time.Millisecond))
		}},
		{"few values", 7, logUniform(time.Millisecond, time.Second)},
	}
	for _, d := range dists {
		t.Run(d.name, func(t *testing.T) {
			s := NewStats()
			vals := make([]time.Duration, d.n)
			for i := range vals {
				vals[i] = d.gen()
				s.Observe(200, vals[i], false)
			}
			slices.Sort(vals)
			snap := s.Snapshot()
			for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
				rank := max(int(math.Ceil(q*float64(len(vals))-1e-9)), 1)
				exact := vals[rank-1]
				got := snap.Quantile(q)
				i := bucketOf(got)
				lower := time.Duration(-1 << 63)
				if i > 0 {
					lower = BucketBound(i - 1)
				}
				if got < exact || exact <= lower {
					t.Errorf("Quantile(%v) = %s; exact %s is not in its bucket (%s, %s]", q, got, exact, lower, got)
				}
			}
		})
	}
}

// BenchmarkStatsObserve measures Observe from all Ps at once, with
// latencies spread over a few buckets as real traffic is.
func BenchmarkStatsObserve(b *testing.B) {
	s := NewStats()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			status := 200
			if i%100 == 0 {
				status = 500
			}
			s.Observe(status, time.Duration(40+i%64)*time.Millisecond, i%50 == 0)
		}
	})
}
