package autoscaler

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestWindow_Average(t *testing.T) {
	type rec struct {
		at, dt time.Duration // the record covers [t0+at-dt, t0+at]
		value  float64
	}
	type query struct {
		at, d time.Duration
		want  float64
	}
	// every returns records of value over [from, to) in steps of step.
	every := func(from, to, step time.Duration, value float64) []rec {
		var rs []rec
		for at := from + step; at <= to; at += step {
			rs = append(rs, rec{at, step, value})
		}
		return rs
	}
	cat := func(parts ...[]rec) []rec {
		var rs []rec
		for _, p := range parts {
			rs = append(rs, p...)
		}
		return rs
	}
	tests := []struct {
		name    string
		records []rec
		queries []query
	}{
		{
			name:    "no record is zero",
			queries: []query{{0, ms(1000), 0}, {ms(5000), ms(1000), 0}},
		},
		{
			name:    "constant value",
			records: every(0, ms(1000), ms(100), 2),
			queries: []query{{ms(1000), ms(1000), 2}, {ms(1000), ms(500), 2}, {ms(1000), ms(100), 2}},
		},
		{
			name:    "before the first record only what exists counts",
			records: every(0, ms(200), ms(100), 4),
			queries: []query{{ms(200), ms(1000), 4}, {ms(100), ms(1000), 4}},
		},
		{
			name: "gaps after the first record count as zero",
			records: cat(
				every(0, ms(200), ms(100), 4),
				[]rec{{ms(500), ms(100), 2}},
			),
			queries: []query{
				{ms(500), ms(1000), (4*0.2 + 2*0.1) / 0.5},
				{ms(1000), ms(1000), (4*0.2 + 2*0.1) / 1.0},
				{ms(1000), ms(500), 0}, // (500ms, 1s] has no records
				{ms(600), ms(200), 1},  // half of the 2s, half a gap
			},
		},
		{
			name:    "old records fall out of the window",
			records: cat(every(0, ms(100), ms(100), 10), every(ms(100), ms(2000), ms(100), 0)),
			queries: []query{{ms(2000), ms(1000), 0}},
		},
		{
			name:    "an old record leaves the window gradually",
			records: []rec{{ms(100), ms(100), 10}},
			queries: []query{{ms(1000), ms(1000), 1}, {ms(1050), ms(1000), 0.5}, {ms(1100), ms(1000), 0}},
		},
		{
			name:    "long silence after the last record",
			records: every(0, ms(1000), ms(100), 3),
			queries: []query{{ms(1500), ms(1000), 1.5}, {ms(60000), ms(1000), 0}},
		},
		{
			name:    "a span that is not a multiple of the bucket",
			records: cat(every(0, ms(1000), ms(100), 1), every(ms(1000), ms(1200), ms(100), 3)),
			queries: []query{{ms(1200), ms(300), (1*0.1 + 3*0.2) / 0.3}, {ms(1150), ms(250), (1*0.1 + 3*0.15) / 0.25}},
		},
		{
			name:    "one record spanning many buckets",
			records: []rec{{ms(1000), ms(1000), 3}},
			queries: []query{{ms(1000), ms(500), 3}, {ms(1000), ms(1000), 3}},
		},
		{
			name:    "records not on bucket edges",
			records: []rec{{ms(150), ms(150), 2}, {ms(370), ms(220), 6}},
			queries: []query{
				{ms(370), ms(1000), (2*0.15 + 6*0.22) / 0.37},
				{ms(370), ms(170), 6},
			},
		},
		{
			name:    "a span longer than the window keeps is cut to it",
			records: cat(every(0, ms(1000), ms(100), 5), every(ms(1000), ms(2000), ms(100), 1)),
			queries: []query{{ms(2000), ms(5000), 1}},
		},
		{
			name:    "overlapping records add up",
			records: []rec{{ms(100), ms(100), 1}, {ms(100), ms(100), 2}},
			queries: []query{{ms(100), ms(100), 3}},
		},
		{
			name:    "empty and NaN records carry no weight",
			records: []rec{{ms(100), ms(100), 2}, {ms(200), 0, 50}, {ms(200), ms(100), math.NaN()}},
			queries: []query{{ms(100), ms(100), 2}, {ms(200), ms(200), 1}},
		},
		{
			name:    "panic and stable averages of one burst",
			records: cat(every(0, ms(900), ms(100), 0), every(ms(900), ms(1000), ms(100), 50)),
			queries: []query{{ms(1000), ms(100), 50}, {ms(1000), ms(1000), 5}},
		},
		{
			name:    "a record out of order",
			records: []rec{{ms(300), ms(100), 4}, {ms(100), ms(100), 2}},
			queries: []query{{ms(300), ms(300), 2}, {ms(300), ms(100), 4}},
		},
		{
			name:    "zero or negative span",
			records: every(0, ms(500), ms(100), 1),
			queries: []query{{ms(500), 0, 0}, {ms(500), -ms(100), 0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWindow(ms(100), ms(1000))
			for _, r := range tt.records {
				w.Record(t0.Add(r.at), r.dt, r.value)
			}
			for _, q := range tt.queries {
				got := w.Average(t0.Add(q.at), q.d)
				if math.Abs(got-q.want) > 1e-9 {
					t.Errorf("Average(t0+%v, %v) = %v, want %v", q.at, q.d, got, q.want)
				}
			}
		})
	}
}

func TestWindow_Record_reusesSlots(t *testing.T) {
	// Many times round the ring: old buckets must be reset, not added to.
	w := NewWindow(ms(10), ms(100))
	now := t0
	for i := range 10000 {
		now = now.Add(ms(10))
		w.Record(now, ms(10), float64(i%7))
	}
	// The last 100ms held i = 9990..9999, whose i%7 values average to:
	var sum float64
	for i := 9990; i < 10000; i++ {
		sum += float64(i % 7)
	}
	if got, want := w.Average(now, ms(100)), sum/10; math.Abs(got-want) > 1e-9 {
		t.Fatalf("Average = %v, want %v", got, want)
	}
}

func TestNewWindow_badSizes(t *testing.T) {
	w := NewWindow(0, 0)
	w.Record(t0.Add(time.Second), time.Second, 2)
	if got := w.Average(t0.Add(time.Second), time.Minute); got != 2 {
		t.Fatalf("Average = %v, want 2", got)
	}
}

func TestWindow_allocs(t *testing.T) {
	w := NewWindow(time.Second, time.Minute)
	now := t0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Second)
		w.Record(now, time.Second, 3)
		_ = w.Average(now, time.Minute)
		_ = w.Average(now, 6*time.Second)
	})
	if allocs != 0 {
		t.Fatalf("Record and Average allocate %v times per call, want 0", allocs)
	}
}

func BenchmarkWindow_RecordAverage(b *testing.B) {
	w := NewWindow(time.Second, time.Minute)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		w.Record(now, time.Second, 3)
		_ = w.Average(now, time.Minute)
	}
}
