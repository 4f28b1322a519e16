package rollout

import (
	"math"
	"sync/atomic"
	"time"
)

// NBuckets is the number of latency buckets: bucket 0 holds up to 1 ms,
// each next one is 10% wider than the one before, up to about 63 s, and
// the last one holds everything slower.
const NBuckets = 118

// growth is the ratio of one bucket's upper bound to the one before: 10%
// buckets tell 500 ms from 600 ms apart (and 500 from 550).
const growth = 1.1

// Overflow is what Quantile returns when the quantile falls in the last,
// unbounded bucket: slower than any finite bound, and over any MaxP99.
const Overflow = time.Duration(math.MaxInt64)

// bounds holds the inclusive upper bound of each finite bucket, rounded to
// the microsecond so they print well.
var bounds = func() (b [NBuckets - 1]time.Duration) {
	for i := range b {
		us := math.Round(1000 * math.Pow(growth, float64(i)))
		b[i] = time.Duration(us) * time.Microsecond
	}
	return b
}()

// BucketBound returns the inclusive upper bound of bucket i, or Overflow
// for the last bucket.
func BucketBound(i int) time.Duration {
	if i >= len(bounds) {
		return Overflow
	}
	return bounds[i]
}

// bucketOf returns the first bucket whose upper bound is at least d.
func bucketOf(d time.Duration) int {
	lo, hi := 0, len(bounds) // the answer is in [lo, hi]; hi is the +Inf bucket
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if d <= bounds[mid] {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// Stats counts one revision's answered requests. It is safe for
// concurrent use; the zero Stats is ready to use.
//
// There is no request counter: requests are the cold ones plus the warm
// histogram, so Observe touches one shared word (two on a 5xx) and a
// Snapshot can never show more errors than requests.
type Stats struct {
	errors  atomic.Int64
	cold    atomic.Int64
	buckets [NBuckets]atomic.Int64
}

// NewStats returns empty Stats.
func NewStats() *Stats { return new(Stats) }

// Observe records one answered request: its HTTP status, how long it took,
// and whether it waited for a cold start. Cold requests are counted apart
// and kept out of the latency histogram. Observe does not block or
// allocate.
func (s *Stats) Observe(status int, took time.Duration, cold bool) {
	if cold {
		s.cold.Add(1)
	} else {
		s.buckets[bucketOf(took)].Add(1)
	}
	// After the request is counted: Snapshot reads errors first.
	if status >= 500 {
		s.errors.Add(1)
	}
}

// Snapshot returns the cumulative counters now. The fields are read one by
// one, not as a transaction, but errors are read first so Errors never
// exceeds Requests.
func (s *Stats) Snapshot() Snapshot {
	var out Snapshot
	out.Errors = s.errors.Load()
	out.Cold = s.cold.Load()
	out.Requests = out.Cold
	for i := range s.buckets {
		n := s.buckets[i].Load()
		out.Buckets[i] = n
		out.Requests += n
	}
	return out
}

// Snapshot is one revision's cumulative counters at a moment, or, after
// Sub, the counts of a window between two moments.
type Snapshot struct {
	Requests int64 `json:"requests"` // all answered, cold included
	Errors   int64 `json:"errors"`   // status >= 500, cold included
	Cold     int64 `json:"cold"`     // waited for a cold start
	// Buckets counts warm requests per latency bucket (not cumulative);
	// BucketBound gives each bucket's upper bound.
	Buckets [NBuckets]int64 `json:"buckets"`
}

// Sub returns s - prev, the window between two snapshots.
func (s Snapshot) Sub(prev Snapshot) Snapshot {
	out := Snapshot{
		Requests: s.Requests - prev.Requests,
		Errors:   s.Errors - prev.Errors,
		Cold:     s.Cold - prev.Cold,
	}
	for i := range s.Buckets {
		out.Buckets[i] = s.Buckets[i] - prev.Buckets[i]
	}
	return out
}

// negative reports whether any count is below zero, which a window only
// shows when the counters were reset between its two snapshots.
func (s Snapshot) negative() bool {
	if s.Requests < 0 || s.Errors < 0 || s.Cold < 0 {
		return true
	}
	for _, n := range s.Buckets {
		if n < 0 {
			return true
		}
	}
	return false
}

// Warm returns the number of requests in the latency histogram.
func (s Snapshot) Warm() int64 {
	var n int64
	for _, c := range s.Buckets {
		n += c
	}
	return n
}

// ErrorRate returns Errors/Requests, or 0 when there were no requests.
func (s Snapshot) ErrorRate() float64 {
	if s.Requests <= 0 {
		return 0
	}
	return float64(s.Errors) / float64(s.Requests)
}

// Quantile returns the q-quantile (q in 0..1, clamped) of the warm
// latencies, as the upper bound of the bucket that holds it: never below
// the true value and less than 10% above it. It returns 0 when there is no
// warm request, and Overflow when the quantile is in the last bucket.
// The q-quantile of n values is the ceil(q*n)-th smallest (at least the
// first).
func (s Snapshot) Quantile(q float64) time.Duration {
	n := s.Warm()
	if n <= 0 {
		return 0
	}
	switch {
	case !(q > 0): // NaN too
		q = 0
	case q > 1:
		q = 1
	}
	// The epsilon keeps 0.99*n from rounding up past an exact rank.
	rank := max(int64(math.Ceil(q*float64(n)-1e-9)), 1)
	var seen int64
	for i, c := range s.Buckets {
		seen += c
		if seen >= rank {
			return BucketBound(i)
		}
	}
	return Overflow // unreachable while no bucket is negative
}
