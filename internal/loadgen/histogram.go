package loadgen

import (
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency summarises a latency distribution, in milliseconds (the JSON
// report's latency_ms).
type Latency struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Quantile returns the named quantile of l ("p50", "p95", "p99", "max"),
// and false for another name.
func (l Latency) Quantile(name string) (float64, bool) {
	switch name {
	case "p50":
		return l.P50, true
	case "p95":
		return l.P95, true
	case "p99":
		return l.P99, true
	case "max":
		return l.Max, true
	}
	return 0, false
}

// Histogram records latencies from 1 µs to 1 hour to three significant
// digits (an HdrHistogram). It is not safe for concurrent use.
type Histogram struct {
	h *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)}
}

// Record adds one latency; values outside the range are clamped to it.
func (h *Histogram) Record(d time.Duration) {
	us := int64(d / time.Microsecond)
	us = min(max(us, 1), h.h.HighestTrackableValue())
	h.h.RecordValue(us) // cannot fail once clamped
}

// Count returns how many latencies were recorded.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Quantile returns the latency at quantile q (0.99 for p99).
func (h *Histogram) Quantile(q float64) time.Duration {
	return time.Duration(h.h.ValueAtQuantile(q*100)) * time.Microsecond
}

// Summary returns p50, p95, p99, max and mean in milliseconds; zeros when
// nothing was recorded.
func (h *Histogram) Summary() Latency {
	if h.h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		P50:  ms(h.h.ValueAtQuantile(50)),
		P95:  ms(h.h.ValueAtQuantile(95)),
		P99:  ms(h.h.ValueAtQuantile(99)),
		Max:  ms(h.h.Max()),
		Mean: h.h.Mean() / 1000,
	}
}
