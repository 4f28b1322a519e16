package cost

import (
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/manifest"
)

// fakeBusy is a busy clock that serves a fixed share of the time since
// the instance became ready.
type fakeBusy struct {
	readyAt time.Time
	share   float64
}

func (f fakeBusy) BusyTime(now time.Time) time.Duration {
	if now.Before(f.readyAt) {
		return 0
	}
	return time.Duration(f.share * float64(now.Sub(f.readyAt)))
}

var t0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func at(d string) time.Time {
	v, err := time.ParseDuration(d)
	if err != nil {
		panic(err)
	}
	return t0.Add(v)
}

func mustParse(t *testing.T, yamlText string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(yamlText), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// day plays a scripted day on m with a stepped clock: two deployments,
// five instances with known lifetimes and busy shares, and known requests.
// It flushes every 7m13s (so that intervals straddle minute buckets) and
// calls between(now) after each flush.
func day(t *testing.T, m *Meter, between func(now time.Time)) {
	t.Helper()
	web := mustParse(t, "name: web\nmode: serverless\nruntime: {command: [x]}\n")
	api := mustParse(t, "name: api\nmode: dedicated\nruntime: {command: [x]}\nscaling: {min: 2, max: 4}\nresources: {cpu: 2, memory: 4Gi}\n")
	type event struct {
		at time.Time
		do func()
	}
	ready := func(model, id string, when string, share float64) event {
		return event{at(when), func() { m.InstanceReady(model, id, fakeBusy{at(when), share}, at(when)) }}
	}
	starting := func(model, id, when string) event {
		return event{at(when), func() { m.InstanceStarting(model, id, at(when)) }}
	}
	gone := func(model, id, when string) event {
		return event{at(when), func() { m.InstanceGone(model, id, at(when)) }}
	}
	events := []event{
		{t0, func() { m.Deployment(web, t0); m.Deployment(api, t0) }},
		// web: serverless, 1 vCPU and 2 GiB (the default size).
		starting("web", "a1", "10s"), ready("web", "a1", "12s", 1.0/6), gone("web", "a1", "6h0m12s"),
		starting("web", "a2", "8h"), ready("web", "a2", "8h0m3s", 0.5), gone("web", "a2", "9h0m3s"),
		// api: dedicated, min 2, 2 vCPU and 4 GiB.
		starting("api", "b1", "0s"), ready("api", "b1", "30s", 0.25),
		starting("api", "b2", "0s"), ready("api", "b2", "30s", 0.25),
		starting("api", "b3", "12h"), ready("api", "b3", "12h0m30s", 0.4), gone("api", "b3", "14h0m30s"),
		{at("1h"), func() {
			web, api := m.Requests("web"), m.Requests("api")
			for i := 0; i < 250000; i++ {
				web.Add(20*time.Millisecond, i < 2)
			}
			for i := 0; i < 100000; i++ {
				api.Add(5*time.Millisecond, false)
			}
		}},
	}
	for now := t0; now.Before(at("24h")); now = now.Add(7*time.Minute + 13*time.Second) {
		now := now
		events = append(events, event{now, func() { m.Flush(now); between(now) }})
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].at.Before(events[j].at) })
	for _, e := range events {
		e.do()
	}
}

func cents(v float64) int64 { return int64(math.Round(v * 100)) }

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }

// TestMeter_Report checks the meter's figures for the scripted day against
// values computed by hand from the default prices:
//
//	serverless: $0.0000166667 per GB-second, $0.20 per million requests
//	dedicated:  $0.04048 per vCPU-hour, $0.004445 per GB-hour
//	web (1 vCPU, 2 GiB): 0.04937/h dedicated; api (2 vCPU, 4 GiB): 0.09874/h
func TestMeter_Report(t *testing.T) {
	type want struct {
		starting, busy, idle float64 // instance-seconds
		requests, cold       int64
		paid, idleC, asSL    int64 // cents
		asDed                int64
	}
	tests := []struct {
		name  string
		since time.Time
		want  map[string]want
	}{
		{
			name:  "whole day",
			since: t0,
			want: map[string]want{
				// a1: 2s starting, 21600s ready, 1/6 busy; a2: 3s starting, 3600s ready, 1/2 busy.
				// paid = (5 + 3600 + 1800) s × 2 GB × 0.0000166667 + 250000 × 0.20/1e6 = 0.2302
				// as dedicated: the floor, one instance all day = 24 h × 0.04937 = 1.1849
				"web": {starting: 5, busy: 5400, idle: 18000 + 1800, requests: 250000, cold: 2, paid: 23, idleC: 0, asSL: 23, asDed: 118},
				// b1, b2: 30s starting then 86370s ready, 1/4 busy; b3: 30s starting, 7200s ready, 0.4 busy.
				// paid = (2 × 86400 + 7230) s × 0.09874/3600 = 4.9378
				// idle = (2 × 64777.5 + 4320) s × 0.09874/3600 = 3.6719
				// as serverless = (90 + 43185 + 2880) s × 4 GB × 0.0000166667 + 100000 × 0.20/1e6 = 3.0970
				"api": {starting: 90, busy: 43185 + 2880, idle: 2*64777.5 + 4320, requests: 100000, paid: 494, idleC: 367, asSL: 310, asDed: 494},
			},
		},
		{
			name:  "since noon",
			since: at("12h"),
			want: map[string]want{
				// Only the floor: 12 h × 0.04937 = 0.5924.
				"web": {asDed: 59},
				// b1, b2: 43200s ready each, 1/4 busy; b3 as above.
				// paid = (2 × 43200 + 7230) s × 0.09874/3600 = 2.5681
				// idle = (2 × 32400 + 4320) s × 0.09874/3600 = 1.8958
				// as serverless = (30 + 21600 + 2880) s × 4 GB × 0.0000166667 = 1.6340
				"api": {starting: 30, busy: 21600 + 2880, idle: 2*32400 + 4320, paid: 257, idleC: 190, asSL: 163, asDed: 257},
			},
		},
	}
	m := NewMeter(nil, t0)
	day(t, m, func(time.Time) {})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := m.Report("", tt.since, at("24h"))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Models) != len(tt.want) {
				t.Fatalf("models %+v, want %d", r.Models, len(tt.want))
			}
			for _, mr := range r.Models {
				w := tt.want[mr.Model]
				u := mr.Usage
				if !near(u.Starting.Seconds, w.starting) || !near(u.Busy.Seconds, w.busy) || !near(u.Idle.Seconds, w.idle) {
					t.Errorf("%s: instance-seconds starting %.3f busy %.3f idle %.3f, want %v %v %v",
						mr.Model, u.Starting.Seconds, u.Busy.Seconds, u.Idle.Seconds, w.starting, w.busy, w.idle)
				}
				if u.Requests != w.requests || u.ColdStarts != w.cold {
					t.Errorf("%s: requests %d cold %d, want %d %d", mr.Model, u.Requests, u.ColdStarts, w.requests, w.cold)
				}
				got := []int64{cents(mr.Cost), cents(mr.CostIdle), cents(mr.CostAs[manifest.Serverless]), cents(mr.CostAs[manifest.Dedicated])}
				exp := []int64{w.paid, w.idleC, w.asSL, w.asDed}
				for i, name := range []string{"paid", "idle", "as serverless", "as dedicated"} {
					if got[i] != exp[i] {
						t.Errorf("%s: %s = %d cents (%.6f), want %d", mr.Model, name, got[i], []float64{mr.Cost, mr.CostIdle, mr.CostAs[manifest.Serverless], mr.CostAs[manifest.Dedicated]}[i], exp[i])
					}
				}
			}
		})
	}
}

func TestMeter_reportAfterRestart(t *testing.T) {
	dir := t.TempDir()
	m, err := Open(dir, nil, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	day(t, m, func(now time.Time) {
		if n++; n%17 == 0 {
			if err := m.Persist(now); err != nil {
				t.Fatal(err)
			}
		}
	})
	want, err := m.Report("", t0, at("24h"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(at("24h")); err != nil {
		t.Fatal(err)
	}
	m2, err := Open(dir, nil, nil, at("24h"))
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close(at("24h"))
	if _, err := Open(dir, nil, nil, at("24h")); err == nil {
		t.Fatal("a second Open of the same cost.db: no error")
	}
	got, err := m2.Report("", t0, at("24h"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Models) != len(want.Models) {
		t.Fatalf("after restart: %d models, want %d", len(got.Models), len(want.Models))
	}
	for i := range want.Models {
		g, w := got.Models[i], want.Models[i]
		if g.Model != w.Model || !near(g.Cost, w.Cost) || !near(g.Usage.Busy.Seconds, w.Usage.Busy.Seconds) ||
			g.Usage.Requests != w.Usage.Requests || !near(g.CostAs[manifest.Dedicated], w.CostAs[manifest.Dedicated]) {
			t.Errorf("after restart:\n got %+v\nwant %+v", g, w)
		}
	}
	one, err := m2.Report("api", t0, at("24h"))
	if err != nil || len(one.Models) != 1 || one.Models[0].Model != "api" {
		t.Fatalf("report for api: %+v, %v", one, err)
	}
}

func TestMeter_Live(t *testing.T) {
	m := NewMeter(nil, t0)
	web := mustParse(t, "name: web\nmode: serverless\nruntime: {command: [x]}\n")
	m.Deployment(web, t0)
	m.InstanceStarting("web", "a", at("1s"))
	m.InstanceReady("web", "a", fakeBusy{at("3s"), 0.5}, at("3s"))
	m.Requests("web").Add(time.Second, true)
	l0 := m.Live(at("5s"))
	l1 := m.Live(at("13s"))
	d := l1.Models["web"].Minus(l0.Models["web"])
	if !near(d.Busy.Seconds, 4) || !near(d.Idle.Seconds, 4) || d.Starting.Seconds != 0 || d.Requests != 0 {
		t.Fatalf("usage between readings = %+v", d)
	}
	u := l1.Models["web"]
	if !near(u.Starting.Seconds, 2) || u.Requests != 1 || u.ColdStarts != 1 || !near(u.Floor.Seconds, 13) || u.Mode != manifest.Serverless {
		t.Fatalf("totals = %+v", u)
	}
}

func TestMeter_Collect(t *testing.T) {
	m := NewMeter(nil, t0)
	api := mustParse(t, "name: api\nmode: dedicated\nruntime: {command: [x]}\n")
	m.Deployment(api, t0)
	m.InstanceStarting("api", "b", t0)
	m.InstanceReady("api", "b", fakeBusy{at("10s"), 0}, at("10s"))
	m.InstanceGone("api", "b", at("1h0m10s"))
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = mt.GetCounter().GetValue()
		}
	}
	for key, want := range map[string]float64{
		"tandem_cost_instance_seconds_total,model=api,state=starting":   10,
		"tandem_cost_instance_seconds_total,model=api,state=idle":       3600,
		"tandem_cost_total,currency=USD,model=api,priced_as=dedicated":  3610 * 0.04937 / 3600,
		"tandem_cost_total,currency=USD,model=api,priced_as=serverless": 10 * 2 * 0.0000166667,
		"tandem_cost_idle_total,currency=USD,model=api":                 0.04937,
		"tandem_cost_instance_seconds_total,model=api,state=busy":       0,
	} {
		if v, ok := got[key]; !ok || !near(v, want) {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
}

func TestMeter_nil(t *testing.T) {
	var m *Meter
	m.Deployment(&manifest.Manifest{Name: "x"}, t0)
	m.InstanceStarting("x", "a", t0)
	m.InstanceReady("x", "a", nil, t0)
	m.InstanceGone("x", "a", t0)
	m.Requests("x").Add(time.Second, true)
	m.Flush(t0)
	if r, err := m.Report("", t0, t0); err != nil || len(r.Models) != 0 {
		t.Fatalf("nil meter report = %+v, %v", r, err)
	}
	if err := m.Close(t0); err != nil {
		t.Fatal(err)
	}
}

// TestRequestCounter_Add races the request path against flushes: every
// request is counted once.
func TestRequestCounter_Add(t *testing.T) {
	m := NewMeter(nil, t0)
	c := m.Requests("web")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				c.Add(time.Millisecond, i%100 == 0)
			}
		}()
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for now := t0; ; now = now.Add(time.Second) {
			select {
			case <-stop:
				return
			default:
				m.Flush(now)
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-done
	u := m.Live(at("24h")).Models["web"]
	if u.Requests != 40000 || u.ColdStarts != 400 || !near(u.RequestSeconds, 40) {
		t.Fatalf("counted %d requests (%d cold, %.3fs), want 40000 (400, 40s)", u.Requests, u.ColdStarts, u.RequestSeconds)
	}
}

func TestParseSince(t *testing.T) {
	now := at("48h")
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"", at("24h"), false},
		{"24h", at("24h"), false},
		{"90m", at("46h30m"), false},
		{"2d", t0, false},
		{"2026-03-02T12:00:00Z", at("12h"), false},
		{"-5h", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSince(tt.in, now)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// A report taken in the first second of a minute includes that minute
// (bucket starts are whole seconds; the bound once was too).
func TestMeter_ReportFirstSecondOfMinute(t *testing.T) {
	for _, persisted := range []bool{false, true} {
		m, err := Open(t.TempDir(), nil, nil, t0)
		if err != nil {
			t.Fatal(err)
		}
		man := &manifest.Manifest{Name: "m", Mode: manifest.Dedicated, Runtime: manifest.Runtime{Command: []string{"x"}}}
		man.SetDefaults()
		start := t0.Add(10 * time.Minute)
		m.Deployment(man, start)
		m.InstanceStarting("m", "i1", start)
		m.Requests("m").Add(time.Millisecond, false)
		now := start.Add(500 * time.Millisecond)
		if persisted {
			if err := m.Persist(now); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := m.Report("m", t0, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Models) != 1 || rep.Models[0].Usage.Requests != 1 {
			t.Fatalf("persisted=%v: report %+v, want the request of this minute", persisted, rep.Models)
		}
		m.Close(now)
	}
}

// A template is metered apart from instances, as idle memory of the
// deployment's instance size, from its start to its end, under either mode.
func TestMeter_Template(t *testing.T) {
	m := NewMeter(nil, t0)
	man := mustParse(t, "name: tpl\nmode: serverless\nruntime: {command: [x]}\nresources: {memory: 1Gi}\n")
	m.Deployment(man, at("0s"))
	m.TemplateStarted("tpl", at("10s"))
	m.TemplateStarted("tpl", at("70s")) // a second revision's, during a roll
	m.TemplateEnded("tpl", at("130s"))
	m.TemplateEnded("tpl", at("3610s"))
	m.TemplateEnded("tpl", at("4000s")) // one end too many is ignored
	u := m.Live(at("7200s")).Models["tpl"]
	if want := 120.0 + 3540; math.Abs(u.Template.Seconds-want) > 1e-6 || math.Abs(u.Template.GB-want) > 1e-6 {
		t.Fatalf("template time %+v, want %v s and GB-s", u.Template, want)
	}
	if u.Total().Seconds != 0 {
		t.Fatalf("templates counted as instance time: %+v", u.Total())
	}
	p := DefaultPrices()
	want := 3660.0 / 3600 * p.Template.GBHour
	for _, mode := range Modes {
		if got := p.Cost(mode, u); math.Abs(got-want) > 1e-12 {
			t.Errorf("%s cost %v, want %v (the template's memory only)", mode, got, want)
		}
		if got := p.IdleCost(mode, u); math.Abs(got-want) > 1e-12 {
			t.Errorf("%s idle cost %v, want %v", mode, got, want)
		}
	}
}
