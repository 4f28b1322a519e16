package peerstats

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/internal/api"
)

var t0 = time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)

// clock is a stepped clock: tests move it, nothing reads the wall clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) step(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func report(peer string, seq uint64, conc map[string]float64) *Report {
	r := &Report{Peer: peer, Boot: 1, Seq: seq}
	for name, c := range conc {
		r.Deployments = append(r.Deployments, Stat{Name: name, Concurrency: c, WindowMS: 1000})
	}
	return r
}

func TestCollector_Remote(t *testing.T) {
	clk := &clock{t: t0}
	c := NewCollector("leader", 5*time.Second, clk.now, quiet())
	keep := func(r *Report) {
		t.Helper()
		if err := c.keep(r, clk.now()); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Remote("m", clk.now()); got != 0 {
		t.Fatalf("Remote before any report = %v, want 0", got)
	}

	// Two peers: their concurrency adds up, per deployment.
	keep(report("a", 1, map[string]float64{"m": 4, "other": 1}))
	keep(report("b", 1, map[string]float64{"m": 3.5}))
	if got := c.Remote("m", clk.now()); got != 7.5 {
		t.Fatalf("Remote(m) with two peers = %v, want 7.5", got)
	}
	if got := c.Remote("other", clk.now()); got != 1 {
		t.Fatalf("Remote(other) = %v, want 1", got)
	}

	// b keeps reporting, a's next three reports are lost: a's last value
	// is held, the sum does not drop.
	for i := range 3 {
		now := clk.step(time.Second)
		keep(report("b", uint64(2+i), map[string]float64{"m": 3.5}))
		if got := c.Remote("m", now); got != 7.5 {
			t.Fatalf("Remote(m) %d s after a's last report = %v, want 7.5 (held)", i+1, got)
		}
	}
	// a reports again with a new value: it replaces the held one.
	keep(report("a", 2, map[string]float64{"m": 2}))
	if got := c.Remote("m", clk.now()); got != 5.5 {
		t.Fatalf("Remote(m) after a's new report = %v, want 5.5", got)
	}

	// a dies: its value counts until the expiry, then no more.
	var dead time.Time
	for i := range 6 {
		now := clk.step(time.Second)
		keep(report("b", uint64(5+i), map[string]float64{"m": 3.5}))
		if c.Remote("m", now) == 3.5 {
			dead = now
			break
		}
	}
	if dead.IsZero() {
		t.Fatalf("a's report still counts 6 s after it stopped reporting (expiry 5 s): Remote(m) = %v", c.Remote("m", clk.now()))
	}
	if since := dead.Sub(t0.Add(3 * time.Second)); since != 5*time.Second {
		t.Fatalf("a's report stopped counting %v after it arrived, want the expiry, 5s", since)
	}
	// Everyone dead: nothing counts.
	if got := c.Remote("m", clk.step(5*time.Second)); got != 0 {
		t.Fatalf("Remote(m) once every report expired = %v, want 0", got)
	}
}

func TestCollector_KeepOrder(t *testing.T) {
	clk := &clock{t: t0}
	c := NewCollector("leader", 5*time.Second, clk.now, quiet())
	if err := c.keep(report("a", 5, map[string]float64{"m": 1}), clk.now()); err != nil {
		t.Fatal(err)
	}
	// A late report (lower seq, same boot) does not replace a newer one.
	if err := c.keep(report("a", 4, map[string]float64{"m": 9}), clk.now()); err == nil || err.Status != http.StatusConflict {
		t.Fatalf("late report: err = %v, want 409", err)
	}
	if got := c.Remote("m", clk.now()); got != 1 {
		t.Fatalf("Remote after a late report = %v, want 1", got)
	}
	// A restarted peer (new boot) starts its sequence again.
	r := report("a", 1, map[string]float64{"m": 2})
	r.Boot = 2
	if err := c.keep(r, clk.now()); err != nil {
		t.Fatalf("report of a restarted peer: %v", err)
	}
	if got := c.Remote("m", clk.now()); got != 2 {
		t.Fatalf("Remote after a restarted peer's report = %v, want 2", got)
	}
	// This process's own report never counts (it has its own traffic).
	if err := c.keep(report("leader", 1, map[string]float64{"m": 5}), clk.now()); err == nil || err.Status != http.StatusConflict {
		t.Fatalf("report from self: err = %v, want 409", err)
	}
	if got := c.Remote("m", clk.now()); got != 2 {
		t.Fatalf("Remote after a report from self = %v, want 2", got)
	}
}

// protectedCollector is the collector as the admin listener serves it:
// behind api.Protect with a token.
const testToken = "peer-stats-test-token-0123456789abcdef"

func protectedCollector(c *Collector) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+Path, c)
	return api.Protect(mux, api.Access{Token: testToken, Logger: quiet()})
}

func TestCollector_ServeHTTP(t *testing.T) {
	clk := &clock{t: t0}
	c := NewCollector("leader", 5*time.Second, clk.now, quiet())
	srv := httptest.NewServer(protectedCollector(c))
	defer srv.Close()

	post := func(body, token string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p struct {
			Error map[string]any `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&p)
		return resp.StatusCode, p.Error
	}
	good := `{"peer":"a","boot":1,"seq":1,"deployments":[{"name":"m","concurrency":2.5,"window_ms":1000,"queued":0}]}`

	for _, tc := range []struct {
		name, body, token string
		status            int
		field             string // the problem's field, when it names one
	}{
		{"no token", good, "", http.StatusUnauthorized, ""},
		{"wrong token", good, "not-the-token-0123456789abcdefghijkl", http.StatusUnauthorized, ""},
		{"not JSON", `peer=a`, testToken, http.StatusBadRequest, ""},
		{"unknown field", `{"peer":"a","seq":1,"deployments":[],"extra":1}`, testToken, http.StatusBadRequest, ""},
		{"two values", good + good, testToken, http.StatusBadRequest, ""},
		{"no peer", `{"seq":1,"deployments":[]}`, testToken, http.StatusBadRequest, "peer"},
		{"seq 0", `{"peer":"a","deployments":[]}`, testToken, http.StatusBadRequest, "seq"},
		{"no name", `{"peer":"a","seq":1,"deployments":[{"concurrency":1}]}`, testToken, http.StatusBadRequest, "deployments[0].name"},
		{"twice", `{"peer":"a","seq":1,"deployments":[{"name":"m"},{"name":"m"}]}`, testToken, http.StatusBadRequest, "deployments[1].name"},
		{"negative", `{"peer":"a","seq":1,"deployments":[{"name":"m","concurrency":-1}]}`, testToken, http.StatusBadRequest, "deployments[0].concurrency"},
		{"huge", `{"peer":"a","seq":1,"deployments":[{"name":"m","concurrency":1e300}]}`, testToken, http.StatusBadRequest, "deployments[0].concurrency"},
		{"queued < 0", `{"peer":"a","seq":1,"deployments":[{"name":"m","queued":-2}]}`, testToken, http.StatusBadRequest, "deployments[0].queued"},
		{"wrong type", `{"peer":"a","seq":"1","deployments":[]}`, testToken, http.StatusBadRequest, ""},
		{"spend < 0", `{"peer":"a","seq":1,"deployments":[],"spend":[{"tenant":"acme","period":1,"usd":-1}]}`, testToken, http.StatusBadRequest, "spend[0].usd"},
		{"spend twice", `{"peer":"a","seq":1,"deployments":[],"spend":[{"tenant":"acme","period":1,"usd":1},{"tenant":"acme","period":1,"usd":1}]}`, testToken, http.StatusBadRequest, "spend[1].tenant"},
		{"spend no tenant", `{"peer":"a","seq":1,"deployments":[],"spend":[{"period":1,"usd":1}]}`, testToken, http.StatusBadRequest, "spend[0].tenant"},
		{"until before period", `{"peer":"a","seq":1,"deployments":[],"spend":[{"tenant":"acme","period":5,"until":5,"usd":1}]}`, testToken, http.StatusBadRequest, "spend[0].until"},
		{"oversized", `{"peer":"a","seq":1,"deployments":[{"name":"` + strings.Repeat("x", MaxBody) + `"}]}`, testToken, http.StatusRequestEntityTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, p := post(tc.body, tc.token)
			if code != tc.status {
				t.Fatalf("status %d (%v), want %d", code, p, tc.status)
			}
			if msg, _ := p["message"].(string); msg == "" {
				t.Errorf("the answer says nothing: %v", p)
			}
			if tc.field != "" && p["field"] != tc.field {
				t.Errorf("field %v, want %q (%v)", p["field"], tc.field, p)
			}
			if got := c.Remote("m", clk.now()); got != 0 {
				t.Fatalf("a refused report counts: Remote = %v", got)
			}
		})
	}
	if code, p := post(good, testToken); code != http.StatusNoContent {
		t.Fatalf("good report: %d %v", code, p)
	}
	if got := c.Remote("m", clk.now()); got != 2.5 {
		t.Fatalf("Remote after a good report = %v, want 2.5", got)
	}
}

// leader is a hand-written backend.LeaderLocator.
type leader struct {
	mu   sync.Mutex
	is   bool
	addr string
}

func (l *leader) IsLeader() bool     { l.mu.Lock(); defer l.mu.Unlock(); return l.is }
func (l *leader) LeaderAddr() string { l.mu.Lock(); defer l.mu.Unlock(); return l.addr }

// posts counts the reports that reach a collector.
type posts struct {
	mu   sync.Mutex
	n    int
	last Report
	next http.Handler
}

func (p *posts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	p.n++
	json.Unmarshal(body, &p.last)
	p.mu.Unlock()
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	p.next.ServeHTTP(w, r)
}

func (p *posts) count() (int, Report) { p.mu.Lock(); defer p.mu.Unlock(); return p.n, p.last }

func TestReporter_Report(t *testing.T) {
	clk := &clock{t: t0}
	coll := NewCollector("leader", 5*time.Second, clk.now, quiet())
	seen := &posts{next: protectedCollector(coll)}
	srv := httptest.NewServer(seen)
	defer srv.Close()
	ld := &leader{addr: strings.TrimPrefix(srv.URL, "http://")}
	r := NewReporter(ReporterConfig{Identity: "follower", Leader: ld, Token: testToken, Interval: time.Second, Logger: quiet()})
	ctx := context.Background()

	// Ten ticks of two deployments, as the deployment loops call Observe:
	// one post for all of it, with each deployment's average over the
	// interval (the integral, not the last sample).
	for i := range 10 {
		now := clk.step(100 * time.Millisecond)
		r.Observe("a", float64(i%2)*4, 100*time.Millisecond, 0, now) // 0,4,0,4...: average 2
		r.Observe("b", 1, 100*time.Millisecond, 3, now)
	}
	if n, _ := seen.count(); n != 0 {
		t.Fatalf("Observe posted %d times; it must only record", n)
	}
	r.report(ctx, clk.now())
	n, last := seen.count()
	if n != 1 {
		t.Fatalf("one report interval made %d posts, want 1", n)
	}
	got := map[string]Stat{}
	for _, s := range last.Deployments {
		got[s.Name] = s
	}
	if len(got) != 2 || math.Abs(got["a"].Concurrency-2) > 1e-9 || math.Abs(got["b"].Concurrency-1) > 1e-9 || got["b"].Queued != 3 || got["a"].WindowMS != 1000 {
		t.Fatalf("report = %+v, want a at 2 and b at 1 (3 queued) over 1000 ms", last.Deployments)
	}
	if last.Peer != "follower" || last.Seq != 1 {
		t.Fatalf("report from %q seq %d, want follower 1", last.Peer, last.Seq)
	}
	if v := coll.Remote("a", clk.now()); math.Abs(v-2) > 1e-9 {
		t.Fatalf("the leader's Remote(a) = %v, want 2", v)
	}
	if v := coll.Remote("b", clk.now()); math.Abs(v-1) > 1e-9 {
		t.Fatalf("the leader's Remote(b) = %v, want 1", v)
	}

	// Nothing observed since: nothing sent.
	r.report(ctx, clk.step(time.Second))
	if n, _ := seen.count(); n != 1 {
		t.Fatalf("an empty interval posted (%d posts)", n)
	}

	// While this process leads, it sends nothing (and forgets the interval).
	ld.mu.Lock()
	ld.is = true
	ld.mu.Unlock()
	r.Observe("a", 5, time.Second, 0, clk.now())
	r.report(ctx, clk.step(time.Second))
	if n, _ := seen.count(); n != 1 {
		t.Fatalf("the leader posted its own stats (%d posts)", n)
	}
	// No leader known: nothing sent either.
	ld.mu.Lock()
	ld.is, ld.addr = false, ""
	ld.mu.Unlock()
	r.Observe("a", 5, time.Second, 0, clk.now())
	r.report(ctx, clk.step(time.Second))
	if n, _ := seen.count(); n != 1 {
		t.Fatalf("posted with no leader known (%d posts)", n)
	}
	// A follower again: the next interval only, with the next seq.
	ld.mu.Lock()
	ld.addr = strings.TrimPrefix(srv.URL, "http://")
	ld.mu.Unlock()
	r.Observe("a", 3, time.Second, 0, clk.now())
	r.report(ctx, clk.step(time.Second))
	n, last = seen.count()
	if n != 2 || last.Seq != 2 || len(last.Deployments) != 1 || last.Deployments[0].Concurrency != 3 {
		t.Fatalf("after leading: %d posts, last %+v; want 2 posts, seq 2, a at 3", n, last)
	}
}

// A reporter without the token is refused (401) and the leader counts
// nothing from it.
func TestReporter_WrongToken(t *testing.T) {
	clk := &clock{t: t0}
	coll := NewCollector("leader", 5*time.Second, clk.now, quiet())
	srv := httptest.NewServer(protectedCollector(coll))
	defer srv.Close()
	r := NewReporter(ReporterConfig{Identity: "follower", Leader: &leader{addr: strings.TrimPrefix(srv.URL, "http://")}, Logger: quiet()})
	r.Observe("a", 2, time.Second, 0, clk.now())
	if _, err := r.post(context.Background(), strings.TrimPrefix(srv.URL, "http://"), Report{Peer: "follower", Seq: 1, Deployments: r.take()}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("post without a token: err = %v, want a 401", err)
	}
	if v := coll.Remote("a", clk.now()); v != 0 {
		t.Fatalf("Remote after an unauthenticated post = %v, want 0", v)
	}
}

func FuzzDecodeReport(f *testing.F) {
	f.Add([]byte(`{"peer":"a","boot":1,"seq":1,"sent":"2026-12-02T07:00:00Z","deployments":[{"name":"m","concurrency":2.5,"window_ms":1000,"queued":1}]}`))
	f.Add([]byte(`{"peer":"a","seq":1,"deployments":[{"name":"m"},{"name":"m"}]}`))
	f.Add([]byte(`{"peer":"","seq":0}`))
	f.Add([]byte(`{"peer":"a","seq":2,"deployments":[],"spend":[{"tenant":"acme","period":1,"until":3600000000001,"usd":0.25}],"reply":true}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := DecodeReport(strings.NewReader(string(b)))
		if err != nil {
			if rep != nil {
				t.Fatal("a report with an error")
			}
			return
		}
		// What is accepted is sane, and survives a round trip unchanged.
		if rep.Peer == "" || rep.Seq == 0 {
			t.Fatalf("accepted %+v", rep)
		}
		for _, s := range rep.Deployments {
			if s.Name == "" || !(s.Concurrency >= 0) || math.IsInf(s.Concurrency, 0) || s.Queued < 0 || s.WindowMS < 0 {
				t.Fatalf("accepted %+v", s)
			}
		}
		again, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		rep2, err := DecodeReport(strings.NewReader(string(again)))
		if err != nil {
			t.Fatalf("re-encoded report refused: %v\n%s", err, again)
		}
		if len(rep2.Deployments) != len(rep.Deployments) || rep2.Seq != rep.Seq || rep2.Peer != rep.Peer {
			t.Fatalf("round trip changed the report: %+v -> %+v", rep, rep2)
		}
	})
}

func spendOf(rep Reply, tenant string) (Spend, bool) {
	for _, s := range rep.Spend {
		if s.Tenant == tenant {
			return s, true
		}
	}
	return Spend{}, false
}

// The leader sums the tenants' spend per period over every process but
// the one asking (its own included), counts the live processes, forgets a
// dead one for the count after the expiry but keeps what it spent until
// the period ends.
func TestCollector_ReplySpend(t *testing.T) {
	clk := &clock{t: t0}
	c := NewCollector("leader", 5*time.Second, clk.now, quiet())
	p1, hour := t0.UnixNano(), t0.Add(time.Hour).UnixNano()
	spend := func(peer string, seq uint64, usd float64) {
		t.Helper()
		r := report(peer, seq, nil)
		r.Reply = true
		r.Spend = []Spend{{Tenant: "acme", Period: p1, Until: hour, USD: usd}}
		if err := c.keep(r, clk.now()); err != nil {
			t.Fatal(err)
		}
	}
	c.SetOwn([]Spend{{Tenant: "acme", Period: p1, Until: hour, USD: 1}}, clk.now())
	spend("a", 1, 2)
	spend("b", 1, 4)
	for _, tc := range []struct {
		asker string
		want  float64
	}{{"a", 5}, {"b", 3}, {"leader", 6}} {
		rep := c.Reply(tc.asker, clk.now())
		s, ok := spendOf(rep, "acme")
		if rep.Replicas != 3 || !ok || s.USD != tc.want || s.Period != p1 {
			t.Fatalf("reply to %s = %+v, want 3 replicas and acme's others at %v", tc.asker, rep, tc.want)
		}
	}
	// Cumulative, not deltas: a's next report replaces its figure.
	spend("a", 2, 2.5)
	if s, _ := spendOf(c.Reply("b", clk.now()), "acme"); s.USD != 3.5 {
		t.Fatalf("after a's next report, others of b = %v, want 3.5", s.USD)
	}
	// b stops reporting: after the expiry it no longer counts as live,
	// but what it spent still counts.
	for i := range 5 {
		clk.step(time.Second)
		spend("a", uint64(3+i), 2.5)
	}
	rep := c.Reply("a", clk.now())
	if s, _ := spendOf(rep, "acme"); rep.Replicas != 2 || s.USD != 5 {
		t.Fatalf("b gone 5 s: %+v, want 2 replicas and others of a at 5 (b's 4 kept)", rep)
	}
	// A later period of the tenant: only the figures of that period count.
	p2 := t0.Add(time.Hour).UnixNano()
	r := report("a", 8, nil)
	r.Spend = []Spend{{Tenant: "acme", Period: p2, Until: p2 + int64(time.Hour), USD: 0.5}}
	if err := c.keep(r, clk.now()); err != nil {
		t.Fatal(err)
	}
	if s, _ := spendOf(c.Reply("leader", clk.now()), "acme"); s.Period != p2 || s.USD != 0.5 {
		t.Fatalf("after a new period: %+v, want period 2 at 0.5", s)
	}
	// When the first period ends its figures go.
	clk.step(time.Hour)
	c.mu.Lock()
	c.expireSpend(clk.now())
	_, kept := c.spent["b"]
	c.mu.Unlock()
	if kept {
		t.Fatal("b's spend over an ended period is still kept")
	}
}

// ledger is a hand-written Ledger.
type fakeLedger struct {
	mu    sync.Mutex
	spend []Spend
	got   []Reply
}

func (l *fakeLedger) Spend(time.Time) []Spend { l.mu.Lock(); defer l.mu.Unlock(); return l.spend }
func (l *fakeLedger) Cluster(r Reply)         { l.mu.Lock(); l.got = append(l.got, r); l.mu.Unlock() }
func (l *fakeLedger) last() (Reply, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.got) == 0 {
		return Reply{}, 0
	}
	return l.got[len(l.got)-1], len(l.got)
}

// With a ledger, a follower reports every interval (traffic or not) and
// hands the leader's reply to its ledger; the leader hands its own.
func TestReporter_Ledger(t *testing.T) {
	clk := &clock{t: t0}
	coll := NewCollector("leader", 5*time.Second, clk.now, quiet())
	srv := httptest.NewServer(protectedCollector(coll))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	lf := &fakeLedger{spend: []Spend{{Tenant: "acme", Period: 1, USD: 2}}}
	f := NewReporter(ReporterConfig{Identity: "follower", Leader: &leader{addr: addr}, Token: testToken, Logger: quiet(), Ledger: lf})
	ll := &fakeLedger{spend: []Spend{{Tenant: "acme", Period: 1, USD: 3}}}
	l := NewReporter(ReporterConfig{Identity: "leader", Leader: &leader{is: true}, Logger: quiet(), Ledger: ll, Local: coll})

	f.report(context.Background(), clk.now()) // nothing observed: sent all the same
	rep, n := lf.last()
	if s, _ := spendOf(rep, "acme"); n != 1 || rep.Replicas != 2 || s.USD != 0 {
		t.Fatalf("follower's reply %+v (%d), want 2 replicas and no one else's spend yet", rep, n)
	}
	l.report(context.Background(), clk.now())
	rep, n = ll.last()
	if s, _ := spendOf(rep, "acme"); n != 1 || rep.Replicas != 2 || s.USD != 2 {
		t.Fatalf("leader's own reply %+v (%d), want 2 replicas and the follower's 2", rep, n)
	}
	f.report(context.Background(), clk.step(time.Second))
	if rep, _ := lf.last(); func() float64 { s, _ := spendOf(rep, "acme"); return s.USD }() != 3 {
		t.Fatalf("follower's reply %+v, want the leader's 3", rep)
	}
	// A leader that cannot be reached: the ledger hears nothing (it keeps
	// what it knew).
	srv.Close()
	f.report(context.Background(), clk.step(time.Second))
	if _, n := lf.last(); n != 2 {
		t.Fatalf("ledger told %d times, want 2 (no reply from a dead leader)", n)
	}
}

// A report that asks for a reply gets 200 and the reply as JSON.
func TestCollector_ServeHTTPReply(t *testing.T) {
	clk := &clock{t: t0}
	c := NewCollector("leader", 5*time.Second, clk.now, quiet())
	c.SetOwn([]Spend{{Tenant: "acme", Period: 1, USD: 0.5}}, clk.now())
	srv := httptest.NewServer(protectedCollector(c))
	defer srv.Close()
	body := `{"peer":"a","boot":1,"seq":1,"deployments":[],"spend":[{"tenant":"acme","period":1,"usd":0.25}],"reply":true}`
	req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep Reply
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&rep) != nil {
		t.Fatalf("status %d, want 200 with a reply", resp.StatusCode)
	}
	if s, ok := spendOf(rep, "acme"); rep.Replicas != 2 || !ok || s.USD != 0.5 {
		t.Fatalf("reply %+v, want 2 replicas and acme's others at 0.5 (the leader's)", rep)
	}
	if s, _ := spendOf(c.Reply("leader", clk.now()), "acme"); s.USD != 0.25 {
		t.Fatalf("the leader's own reply counts a's spend as %v, want 0.25", s.USD)
	}
}
