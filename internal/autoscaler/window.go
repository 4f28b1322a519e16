package autoscaler

import (
	"math"
	"time"
)

// Window keeps time-bucketed averages of a value (concurrency) and answers
// averages over the last d.
//
// A Window is a ring of fixed-size buckets, each holding the integral of
// the value over its span, so memory is fixed at NewWindow and Record and
// Average do not allocate. Within a bucket the value is taken as spread
// evenly over the part of the bucket that records covered, so an average
// whose start falls inside a bucket is exact to within that bucket.
//
// A Window is not safe for concurrent use: its one owner (the controller's
// loop for a deployment) records and reads it.
type Window struct {
	bucket time.Duration
	keep   time.Duration
	sums   []float64 // integral of the value over the bucket, in value·nanoseconds
	index  []int64   // which bucket a slot holds; noBucket when none

	started bool
	epoch   time.Time     // start of the first record; bucket 0 starts here
	first   time.Duration // earliest instant covered, relative to epoch
	last    time.Duration // latest instant covered, relative to epoch
}

const noBucket = math.MinInt64

// NewWindow returns an empty Window of buckets of the given size that
// answers averages over up to keep (keep = stable window). A bucket that is
// not positive is read as one second, and keep is at least one bucket.
func NewWindow(bucket time.Duration, keep time.Duration) *Window {
	if bucket <= 0 {
		bucket = time.Second
	}
	keep = max(keep, bucket)
	// Two more slots than keep needs: an average's span rarely starts and
	// ends on bucket edges.
	n := int((keep+bucket-1)/bucket) + 2
	w := &Window{
		bucket: bucket,
		keep:   keep,
		sums:   make([]float64, n),
		index:  make([]int64, n),
	}
	for i := range w.index {
		w.index[i] = noBucket
	}
	return w
}

// Record adds an observation: value is the time-weighted average over the interval [now-dt, now].
// An observation with dt <= 0 or a value that is not a number carries no
// weight and is dropped. Observations may overlap or come out of order;
// overlapping ones add up, and parts older than the window keeps are
// dropped.
func (w *Window) Record(now time.Time, dt time.Duration, value float64) {
	if dt <= 0 || math.IsNaN(value) {
		return
	}
	if !w.started {
		w.started = true
		w.epoch = now.Add(-dt)
		w.first, w.last = 0, dt
	}
	end := now.Sub(w.epoch)
	start := end - dt
	w.first = min(w.first, start)
	w.last = max(w.last, end)

	// Buckets older than the ring's span are gone or about to be.
	lo := max(start, w.last-time.Duration(len(w.sums))*w.bucket)
	b := int64(w.bucket)
	for k := floorDiv(int64(lo), b); k*b < int64(end); k++ {
		from := max(int64(lo), k*b)
		to := min(int64(end), (k+1)*b)
		if to <= from {
			continue
		}
		slot := w.slot(k)
		switch {
		case w.index[slot] == k:
		case w.index[slot] > k:
			continue // the slot already holds a newer bucket
		default:
			w.index[slot], w.sums[slot] = k, 0
		}
		w.sums[slot] += value * float64(to-from)
	}
}

// Average is the time-weighted average over [now-d, now]; time with no records counts as 0
// only after the first record (before any record, average over what exists).
// With no record at all, or d <= 0, it is 0. A d longer than the window
// keeps is read as that length.
func (w *Window) Average(now time.Time, d time.Duration) float64 {
	if !w.started || d <= 0 {
		return 0
	}
	d = min(d, w.keep)
	hi := now.Sub(w.epoch)
	lo := max(hi-d, w.first)
	if hi <= lo {
		return 0
	}
	b := int64(w.bucket)
	var sum float64
	for k := floorDiv(int64(lo), b); k*b < int64(hi); k++ {
		slot := w.slot(k)
		if w.index[slot] != k {
			continue
		}
		// The part of the bucket that records covered, over which its
		// integral is taken as spread evenly.
		cFrom := max(k*b, int64(w.first))
		cTo := min((k+1)*b, int64(w.last))
		if cTo <= cFrom {
			continue
		}
		from := max(cFrom, int64(lo))
		to := min(cTo, int64(hi))
		if to <= from {
			continue
		}
		sum += w.sums[slot] * float64(to-from) / float64(cTo-cFrom)
	}
	return sum / float64(hi-lo)
}

// slot returns the ring slot of bucket k.
func (w *Window) slot(k int64) int {
	n := int64(len(w.sums))
	return int(((k % n) + n) % n)
}

// floorDiv is a/b rounded towards minus infinity, for instants before the
// epoch.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
