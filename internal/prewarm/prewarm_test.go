package prewarm

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"tandem/internal/manifest"
)

func mustPlan(t *testing.T, entries ...manifest.Prewarm) *Plan {
	t.Helper()
	p, err := Compile(entries)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFloor_Window(t *testing.T) {
	p := mustPlan(t, manifest.Prewarm{Cron: "0 9 * * 1-5", Min: 2, For: manifest.Duration(8 * time.Hour)})
	mon := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC) // a Monday
	at := func(day, h, m, s int) time.Time {
		return mon.AddDate(0, 0, day).Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second)
	}
	steps := []struct {
		now       time.Time
		floor     int
		wantUntil time.Time
	}{
		{at(0, 8, 59, 59), 0, time.Time{}},
		{at(0, 9, 0, 0), 2, at(0, 17, 0, 0)}, // raised at its start
		{at(0, 12, 30, 0), 2, at(0, 17, 0, 0)},
		{at(0, 16, 59, 59), 2, at(0, 17, 0, 0)},
		{at(0, 17, 0, 0), 0, time.Time{}}, // lowered at its end
		{at(1, 9, 0, 1), 2, at(1, 17, 0, 0)},
		{at(5, 9, 0, 0), 0, time.Time{}},  // Saturday
		{at(6, 10, 0, 0), 0, time.Time{}}, // Sunday
	}
	for _, s := range steps {
		d := Floor(p, Pattern{}, s.now)
		if d.Floor != s.floor || !d.Until.Equal(s.wantUntil) {
			t.Errorf("%s: floor %d until %s, want %d until %s", s.now.Format(time.RFC3339), d.Floor, d.Until, s.floor, s.wantUntil)
		}
		if d.Floor > 0 && !strings.Contains(d.Reason, `window "0 9 * * 1-5"`) {
			t.Errorf("%s: reason %q does not name the window", s.now, d.Reason)
		}
	}
}

func TestFloor_WindowsOverlapAndZone(t *testing.T) {
	p := mustPlan(t,
		manifest.Prewarm{Cron: "0 9 * * *", Min: 1, For: manifest.Duration(10 * time.Hour), Timezone: "America/New_York"},
		manifest.Prewarm{Cron: "0 * * * *", Min: 3, For: manifest.Duration(10 * time.Minute)},
	)
	// 9:00 in New York on 7 December 2026 is 14:00 UTC.
	day := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for _, s := range []struct {
		now   time.Duration
		floor int
	}{
		{13*time.Hour + 30*time.Minute, 0},
		{13*time.Hour + 5*time.Minute, 3},                   // the hourly window only
		{14 * time.Hour, 3},                                 // both: the larger min wins
		{14*time.Hour + 10*time.Minute, 1},                  // the hourly one ended
		{23*time.Hour + 59*time.Minute + 59*time.Second, 1}, // 18:59:59 in New York
		{24 * time.Hour, 3},                                 // 19:00 in New York: zone window ended, hourly on
		{24*time.Hour + 10*time.Minute, 0},
	} {
		if d := Floor(p, Pattern{}, day.Add(s.now)); d.Floor != s.floor {
			t.Errorf("+%s: floor %d (%s), want %d", s.now, d.Floor, d.Reason, s.floor)
		}
	}
}

// trace replays a burst every period (each lasting length, its start off
// by up to jitter) and one stray request between some bursts, ticking
// once a second like the controller; it calls fn after each tick.
func trace(start time.Time, bursts int, period, length, jitter time.Duration, fn func(now time.Time, h History)) History {
	r := rand.New(rand.NewPCG(1, 2))
	type span struct{ from, to time.Time }
	var spans []span
	for i := range bursts {
		off := time.Duration(r.Int64N(int64(2*jitter+1))) - jitter
		s := start.Add(time.Duration(i)*period + off)
		spans = append(spans, span{s, s.Add(length)})
		if i%2 == 1 { // a stray request somewhere between two bursts
			m := start.Add(time.Duration(i)*period + length + Gap + time.Duration(r.Int64N(int64(period-2*length-2*Gap))))
			spans = append(spans, span{m, m.Add(time.Second)})
		}
	}
	var h History
	end := start.Add(time.Duration(bursts) * period)
	for now := start; now.Before(end); now = now.Add(time.Second) {
		active := false
		for _, s := range spans {
			if !now.Before(s.from) && now.Before(s.to) {
				active = true
			}
		}
		h, _ = Observe(h, now, active)
		if fn != nil {
			fn(now, h)
		}
	}
	return h
}

func TestPredict_BurstEveryFiveMinutes(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	h := trace(start, 6, 5*time.Minute, 20*time.Second, 2*time.Second, nil)
	now := start.Add(6*5*time.Minute - 2*time.Minute) // 28:00 after start; the 7th burst is due at 30:00
	b, ok := Predict(h, now)
	if !ok {
		t.Fatalf("no burst found in %d episodes", len(h.Episodes))
	}
	if b.Period < 5*time.Minute-3*time.Second || b.Period > 5*time.Minute+3*time.Second {
		t.Errorf("period %s, want about 5m", b.Period)
	}
	due := start.Add(30 * time.Minute)
	if d := b.Next.Sub(due); d < -5*time.Second || d > 5*time.Second {
		t.Errorf("next burst at %s, want about %s", b.Next, due)
	}
	if b.Length < 15*time.Second || b.Length > 25*time.Second || b.Support < MinSupport {
		t.Errorf("length %s support %d", b.Length, b.Support)
	}

	// The floor: off well before, on lead ahead of the burst, off after it.
	p := mustPlan(t, manifest.Prewarm{Predictive: true, Lead: manifest.Duration(30 * time.Second), Min: 2})
	if d := Floor(p, Learn(h), b.Next.Add(-30*time.Second-b.Jitter-time.Second)); d.Floor != 0 {
		t.Errorf("before lead: floor %d (%s)", d.Floor, d.Reason)
	}
	d := Floor(p, Learn(h), b.Next.Add(-30*time.Second))
	if d.Floor != 2 || !strings.Contains(d.Reason, "a burst every 5m0s") {
		t.Errorf("lead before the burst: floor %d (%s), want 2", d.Floor, d.Reason)
	}
	if d := Floor(p, Learn(h), b.Next.Add(b.Length+b.Jitter+time.Second)); d.Floor != 0 {
		t.Errorf("after the expected burst: floor %d (%s)", d.Floor, d.Reason)
	}
}

func TestPredict_RaisesAheadOfEveryBurstOnceLearned(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	const period, length, jitter = 5 * time.Minute, 20 * time.Second, 2 * time.Second
	p := mustPlan(t, manifest.Prewarm{Predictive: true, Lead: manifest.Duration(30 * time.Second), Min: 1})
	// For each burst (not the stray requests), whether the floor was up
	// in the second before it began.
	var raised []bool
	var prevFloor, strays, floorSeconds int
	var inBurst bool
	trace(start, 12, period, length, jitter, func(now time.Time, h History) {
		if h.Active && !inBurst {
			if off := now.Sub(start) % period; off <= jitter || off >= period-jitter {
				raised = append(raised, prevFloor > 0)
			} else {
				strays++
			}
		}
		inBurst = h.Active
		prevFloor = Floor(p, Learn(h), now.Add(time.Second)).Floor
		if prevFloor > 0 {
			floorSeconds++
		}
	})
	if len(raised) != 12 || strays != 6 {
		t.Fatalf("%d bursts and %d strays seen, want 12 and 6", len(raised), strays)
	}
	for i, r := range raised {
		if i >= MinSupport+1 && !r {
			t.Errorf("burst %d began without the floor raised (learned from %d before it): %v", i, i, raised)
		}
	}
	// The floor is up about lead+length+2 jitter per burst, no more.
	if max := 8 * int((30*time.Second+length+3*jitter)/time.Second); floorSeconds > max {
		t.Errorf("floor up for %ds over 8 predicted bursts, want at most %d", floorSeconds, max)
	}
}

func TestPredict_NoPattern(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(3, 4))
	var h History
	at := start
	for range 20 {
		at = at.Add(time.Duration(40+r.IntN(900)) * time.Second)
		h, _ = Observe(h, at, true)
		h, _ = Observe(h, at.Add(Gap), false)
	}
	if b, ok := Predict(h, at); ok {
		t.Errorf("found a burst every %s (support %d) in random traffic", b.Period, b.Support)
	}
}

func TestPredict_StopsWhenBurstsStop(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	h := trace(start, 6, 5*time.Minute, 20*time.Second, 0, nil)
	if _, ok := Predict(h, start.Add(31*time.Minute)); !ok {
		t.Fatal("no burst found")
	}
	// The 7th (30:00) and 8th (35:00) bursts did not come.
	if b, ok := Predict(h, start.Add(36*time.Minute)); ok {
		t.Errorf("still predicting a burst at %s after two missed", b.Next)
	}
}

func TestObserve_Bounded(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	var h History
	var changes int
	for i := range 2 * MaxEpisodes {
		at := start.Add(time.Duration(i) * time.Minute)
		var c1, c2 bool
		h, c1 = Observe(h, at, true)
		h, _ = Observe(h, at.Add(time.Second), false)
		h, c2 = Observe(h, at.Add(Gap), false)
		if c1 {
			changes++
		}
		if c2 {
			changes++
		}
	}
	if len(h.Episodes) > MaxEpisodes {
		t.Errorf("%d episodes kept, bound %d", len(h.Episodes), MaxEpisodes)
	}
	if changes != 4*MaxEpisodes {
		t.Errorf("%d changes, want one per start and one per end (%d)", changes, 4*MaxEpisodes)
	}
	if e := h.Episodes[len(h.Episodes)-1]; !e.End.Equal(e.Start) {
		t.Errorf("last episode %v: a one-tick episode ends where it starts", e)
	}
}

// BenchmarkLearn is learning from a full history (MaxEpisodes: bursts
// every 5 minutes, strays between), which the controller does when an
// episode begins or ends.
func BenchmarkLearn(b *testing.B) {
	start := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	h := trace(start, MaxEpisodes*2/3, 5*time.Minute, 20*time.Second, 2*time.Second, nil)
	p, _ := Compile([]manifest.Prewarm{{Predictive: true, Lead: manifest.Duration(30 * time.Second), Min: 1}})
	now := h.Episodes[len(h.Episodes)-1].Start.Add(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		Floor(p, Learn(h), now)
	}
}

// BenchmarkFloor_Learned is the per-tick cost once the pattern is learned.
func BenchmarkFloor_Learned(b *testing.B) {
	start := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	h := trace(start, MaxEpisodes*2/3, 5*time.Minute, 20*time.Second, 2*time.Second, nil)
	p, _ := Compile([]manifest.Prewarm{{Predictive: true, Lead: manifest.Duration(30 * time.Second), Min: 1}})
	now := h.Episodes[len(h.Episodes)-1].Start.Add(time.Minute)
	pt := Learn(h)
	b.ReportAllocs()
	for b.Loop() {
		Floor(p, pt, now)
	}
	b.ReportMetric(float64(len(h.Episodes)), "episodes")
}

// FuzzLearn feeds arbitrary episode starts (a stored history is read back
// after a restart): Learn and Next must not panic, and a burst they
// predict lies after the pattern's last start, a period on.
func FuzzLearn(f *testing.F) {
	f.Add([]byte{30, 30, 30, 30, 30, 30}, uint16(10))
	f.Add([]byte{1, 255, 0, 0, 7, 30, 30, 30}, uint16(0))
	f.Fuzz(func(t *testing.T, gaps []byte, length uint16) {
		start := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
		var h History
		at := start
		for _, g := range gaps {
			at = at.Add(time.Duration(g) * 10 * time.Second) // gaps of 0 included
			h.Episodes = append(h.Episodes, Episode{Start: at, End: at.Add(time.Duration(length) * time.Millisecond)})
		}
		pt := Learn(h)
		b, ok := pt.Next(at.Add(time.Minute))
		if ok && (b.Period < MinPeriod-10*time.Second || !b.Next.After(pt.Last)) {
			t.Fatalf("burst %+v from pattern %+v", b, pt)
		}
	})
}
