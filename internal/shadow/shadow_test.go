package shadow

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// waitFor polls cond; the deadline is generous, the poll short.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// within fails the test when fn does not return in a generous time.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

func stats(t *testing.T, m *Mirror, model, revision string) Stats {
	t.Helper()
	for _, s := range m.Stats(model) {
		if s.Revision == revision {
			return s
		}
	}
	t.Fatalf("no stats for %s/%s", model, revision)
	return Stats{}
}

// httpSend is what the gateway's Send will look like: a request under ctx
// to the shadow revision.
func httpSend(client *http.Client, url string) func(context.Context) (int, io.ReadCloser, error) {
	return func(ctx context.Context) (int, io.ReadCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"x":1}`))
		if err != nil {
			return 0, nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		return resp.StatusCode, resp.Body, nil
	}
}

func constSend(status int, body string) func(context.Context) (int, io.ReadCloser, error) {
	return func(context.Context) (int, io.ReadCloser, error) {
		return status, io.NopCloser(strings.NewReader(body)), nil
	}
}

// server answers status and body after gate is closed (nil: at once).
func server(t *testing.T, status int, body []byte, gate <-chan struct{}) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	tr := &http.Transport{}
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	return srv, &http.Client{Transport: tr}
}

func TestPair_Verdict(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, read in many pieces
	cases := []struct {
		name                    string
		shadowStatus, pStatus   int
		shadowBody, pBody       []byte
		wantMatch, wantMismatch int64
	}{
		{"same status and body", 200, 200, []byte(`{"y":2}`), []byte(`{"y":2}`), 1, 0},
		{"empty bodies", 204, 204, nil, nil, 1, 0},
		{"large body", 200, 200, big, big, 1, 0},
		{"different body", 200, 200, []byte(`{"y":2}`), []byte(`{"y":3}`), 0, 1},
		{"different status, same body", 500, 200, []byte(`{"y":2}`), []byte(`{"y":2}`), 0, 1},
		{"both differ", 404, 200, []byte("no"), []byte("yes"), 0, 1},
	}
	for _, tc := range cases {
		check := func(t *testing.T, s Stats) {
			t.Helper()
			if s.Matched != tc.wantMatch || s.Mismatched != tc.wantMismatch || s.Errors != 0 || s.Unpaired != 0 || s.Sent != 1 {
				t.Errorf("stats = %+v, want %d match, %d mismatch of 1 sent", s, tc.wantMatch, tc.wantMismatch)
			}
			if s.Status[tc.shadowStatus] != 1 || len(s.Status) != 1 {
				t.Errorf("Status = %v, want one %d", s.Status, tc.shadowStatus)
			}
			if s.P50 <= 0 || s.P99 < s.P50 {
				t.Errorf("P50 = %v, P99 = %v", s.P50, s.P99)
			}
		}
		t.Run(tc.name+"/primary first", func(t *testing.T) {
			gate := make(chan struct{})
			srv, client := server(t, tc.shadowStatus, tc.shadowBody, gate)
			m := New(Config{Workers: 2}, nil)
			defer m.Close()
			p := m.Submit(Copy{Model: "m", Revision: "r2", Timeout: time.Minute, Send: httpSend(client, srv.URL)})
			if p == nil {
				t.Fatal("Submit dropped")
			}
			p.Primary(tc.pStatus, sha256.Sum256(tc.pBody))
			if s := stats(t, m, "m", "r2"); s.Matched+s.Mismatched != 0 {
				t.Fatalf("verdict before the shadow answered: %+v", s)
			}
			close(gate)
			waitFor(t, "verdict", func() bool { s := stats(t, m, "m", "r2"); return s.Matched+s.Mismatched > 0 })
			check(t, stats(t, m, "m", "r2"))
		})
		t.Run(tc.name+"/shadow first", func(t *testing.T) {
			srv, client := server(t, tc.shadowStatus, tc.shadowBody, nil)
			m := New(Config{Workers: 2}, nil)
			defer m.Close()
			p := m.Submit(Copy{Model: "m", Revision: "r2", Timeout: time.Minute, Send: httpSend(client, srv.URL)})
			if p == nil {
				t.Fatal("Submit dropped")
			}
			waitFor(t, "shadow answer", func() bool { return p.state.Load()&shadowDone != 0 })
			if s := stats(t, m, "m", "r2"); s.Matched+s.Mismatched != 0 {
				t.Fatalf("verdict before the primary reported: %+v", s)
			}
			d := NewDigest()
			d.Write(tc.pBody)
			p.Primary(tc.pStatus, d.Sum()) // the second side records the verdict, here and now
			check(t, stats(t, m, "m", "r2"))
		})
	}
}

func TestMirror_Errors(t *testing.T) {
	hijack := func(partial bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if partial { // promise 100 bytes, send 5, hang up
				w.Header().Set("Content-Length", "100")
				w.WriteHeader(200)
				w.Write([]byte("hello"))
				w.(http.Flusher).Flush()
			}
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			conn.Close()
		}
	}
	hang := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // net/http notices a client hanging up only once the body is read
		<-r.Context().Done()
	}
	cases := []struct {
		name    string
		handler http.HandlerFunc
		timeout time.Duration
	}{
		{"connection closed before answering", hijack(false), time.Minute},
		{"connection closed mid-body", hijack(true), time.Minute},
		{"timeout", hang, 50 * time.Millisecond},
	}
	for _, tc := range cases {
		for _, primaryFirst := range []bool{true, false} {
			name := tc.name + "/shadow first"
			if primaryFirst {
				name = tc.name + "/primary first"
			}
			t.Run(name, func(t *testing.T) {
				srv := httptest.NewServer(tc.handler)
				tr := &http.Transport{}
				defer func() { srv.Close(); tr.CloseIdleConnections() }()
				m := New(Config{Workers: 1}, nil)
				defer m.Close()
				p := m.Submit(Copy{Model: "m", Revision: "r2", Timeout: tc.timeout, Send: httpSend(&http.Client{Transport: tr}, srv.URL)})
				if primaryFirst {
					p.Primary(200, sha256.Sum256(nil))
				}
				waitFor(t, "error", func() bool { return stats(t, m, "m", "r2").Errors > 0 })
				if !primaryFirst {
					p.Primary(200, sha256.Sum256(nil))
				}
				s := stats(t, m, "m", "r2")
				if s.Errors != 1 || s.Matched != 0 || s.Mismatched != 0 || s.Sent != 1 || len(s.Status) != 0 || s.P50 != 0 {
					t.Errorf("stats = %+v, want 1 error, nothing compared", s)
				}
			})
		}
	}
	t.Run("Send error and panic", func(t *testing.T) {
		m := New(Config{Workers: 1}, nil)
		defer m.Close()
		fail := func(context.Context) (int, io.ReadCloser, error) { return 0, nil, errors.New("refused") }
		boom := func(context.Context) (int, io.ReadCloser, error) { panic("gateway bug") }
		noBody := func(context.Context) (int, io.ReadCloser, error) { return 200, nil, nil }
		for _, send := range []func(context.Context) (int, io.ReadCloser, error){fail, boom, noBody} {
			m.Submit(Copy{Model: "m", Revision: "r2", Send: send}).Primary(200, sha256.Sum256(nil))
		}
		waitFor(t, "errors", func() bool { return stats(t, m, "m", "r2").Errors == 3 })
		if s := stats(t, m, "m", "r2"); s.Matched+s.Mismatched != 0 {
			t.Errorf("stats = %+v", s)
		}
	})
}

func TestPair_Abandon(t *testing.T) {
	t.Run("before the shadow answers", func(t *testing.T) {
		gate := make(chan struct{})
		srv, client := server(t, 200, []byte("ok"), gate)
		m := New(Config{}, nil)
		defer m.Close()
		p := m.Submit(Copy{Model: "m", Revision: "r2", Timeout: time.Minute, Send: httpSend(client, srv.URL)})
		p.Abandon()
		close(gate)
		waitFor(t, "unpaired", func() bool { return stats(t, m, "m", "r2").Unpaired == 1 })
		if s := stats(t, m, "m", "r2"); s.Matched+s.Mismatched+s.Errors != 0 || s.Status[200] != 1 || s.P50 == 0 {
			t.Errorf("stats = %+v", s)
		}
	})
	t.Run("after the shadow answered", func(t *testing.T) {
		m := New(Config{}, nil)
		defer m.Close()
		p := m.Submit(Copy{Model: "m", Revision: "r2", Send: constSend(200, "ok")})
		waitFor(t, "shadow answer", func() bool { return p.state.Load()&shadowDone != 0 })
		p.Abandon()
		if s := stats(t, m, "m", "r2"); s.Unpaired != 1 || s.Matched+s.Mismatched+s.Errors != 0 {
			t.Errorf("stats = %+v", s)
		}
	})
	t.Run("shadow failed too", func(t *testing.T) {
		m := New(Config{}, nil)
		defer m.Close()
		p := m.Submit(Copy{Model: "m", Revision: "r2", Send: func(context.Context) (int, io.ReadCloser, error) {
			return 0, nil, errors.New("refused")
		}})
		p.Abandon()
		waitFor(t, "error", func() bool { return stats(t, m, "m", "r2").Errors == 1 })
		if s := stats(t, m, "m", "r2"); s.Unpaired != 0 {
			t.Errorf("stats = %+v: a failed shadow is an error, not unpaired", s)
		}
	})
	t.Run("nil pair", func(t *testing.T) {
		var p *Pair
		p.Primary(200, [32]byte{})
		p.Abandon()
	})
}

// goroutinesSettle waits until no more goroutines run than before, and none
// of this package's workers.
func goroutinesSettle(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		n := runtime.NumGoroutine()
		if n <= before && !strings.Contains(stacks, "shadow.(*Mirror).worker") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before:\n%s", n, before, stacks)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMirror_HangingShadow(t *testing.T) {
	before := runtime.NumGoroutine()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	tr := &http.Transport{}
	m := New(Config{Workers: 2, Queue: 4}, nil)
	c := Copy{Model: "m", Revision: "r2", Timeout: time.Hour, Send: httpSend(&http.Client{Transport: tr}, srv.URL)}

	var accepted []*Pair
	within(t, "Submit", func() {
		for range 100 {
			if p := m.Submit(c); p != nil {
				accepted = append(accepted, p)
			}
		}
	})
	if n := len(accepted); n < 4 || n > 6 {
		t.Errorf("accepted %d copies, want the queue (4) plus at most the workers (2)", n)
	}
	if s := stats(t, m, "m", "r2"); s.Dropped != int64(100-len(accepted)) {
		t.Errorf("Dropped = %d, want %d", s.Dropped, 100-len(accepted))
	}
	waitFor(t, "both workers sending", func() bool { return stats(t, m, "m", "r2").Sent == 2 })
	within(t, "Primary", func() {
		for _, p := range accepted {
			p.Primary(200, sha256.Sum256(nil))
		}
	})

	within(t, "Close", m.Close)
	m.Close() // idempotent
	s := stats(t, m, "m", "r2")
	if s.Sent != 2 || s.Errors != 2 || s.Dropped != 98 || s.Matched+s.Mismatched != 0 {
		t.Errorf("after Close: %+v, want 2 sent and canceled (errors), 98 dropped", s)
	}
	if m.Submit(c) != nil {
		t.Error("Submit after Close queued a copy")
	}

	close(release)
	srv.Close()
	tr.CloseIdleConnections()
	goroutinesSettle(t, before)
}

func TestMirror_TimeoutFreesWorker(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer hang.Close()
	m := New(Config{Workers: 1, Queue: 1}, nil)
	defer m.Close()
	m.Submit(Copy{Model: "m", Revision: "r2", Timeout: 20 * time.Millisecond, Send: httpSend(http.DefaultClient, hang.URL)})
	waitFor(t, "the worker to take the hanging copy", func() bool { return stats(t, m, "m", "r2").Sent == 1 })
	p := m.Submit(Copy{Model: "m", Revision: "r2", Timeout: time.Minute, Send: constSend(200, "ok")})
	p.Primary(200, sha256.Sum256([]byte("ok")))
	waitFor(t, "second copy", func() bool { return stats(t, m, "m", "r2").Matched == 1 })
	if s := stats(t, m, "m", "r2"); s.Errors != 1 {
		t.Errorf("stats = %+v", s)
	}
}

// TestMirror_Concurrent runs many primaries at once: every copy ends as
// exactly one of match, mismatch, error, unpaired or dropped.
func TestMirror_Concurrent(t *testing.T) {
	m := New(Config{Workers: 4, Queue: 32}, nil)
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				p := m.Submit(Copy{Model: "m", Revision: "r2", Send: constSend(200, "ok")})
				switch (g + i) % 3 {
				case 0:
					p.Primary(200, sha256.Sum256([]byte("ok")))
				case 1:
					p.Primary(200, sha256.Sum256([]byte("no")))
				default:
					p.Abandon()
				}
			}
		})
	}
	wg.Wait()
	m.Close()
	s := stats(t, m, "m", "r2")
	if s.Sent+s.Dropped != goroutines*each {
		t.Errorf("sent %d + dropped %d != %d", s.Sent, s.Dropped, goroutines*each)
	}
	if s.Matched+s.Mismatched+s.Errors+s.Unpaired != s.Sent {
		t.Errorf("verdicts %+v do not add up to sent", s)
	}
}

func TestMirror_Stats(t *testing.T) {
	m := New(Config{Workers: 1}, nil)
	defer m.Close()
	for _, rev := range []string{"c", "a", "b"} {
		m.Submit(Copy{Model: "m", Revision: rev, Send: constSend(201, "x")}).Primary(201, sha256.Sum256([]byte("x")))
	}
	m.Submit(Copy{Model: "other", Revision: "z", Send: constSend(200, "")})
	waitFor(t, "verdicts", func() bool {
		n := int64(0)
		for _, s := range m.Stats("m") {
			n += s.Matched
		}
		return n == 3
	})
	got := m.Stats("m")
	if len(got) != 3 || got[0].Revision != "a" || got[1].Revision != "b" || got[2].Revision != "c" {
		t.Fatalf("Stats = %+v, want revisions a, b, c", got)
	}
	if got[0].Model != "m" || got[0].Status[201] != 1 {
		t.Errorf("Stats[0] = %+v", got[0])
	}
	if m.Stats("none") != nil {
		t.Error("Stats of an unknown model is not nil")
	}
}

func TestSeries_Quantile(t *testing.T) {
	m := New(Config{Workers: 1}, nil)
	defer m.Close()
	s := m.lookup("m", "r")
	for range 98 {
		s.observe(1500 * time.Microsecond) // bucket (1ms, 2.5ms]
	}
	s.observe(7 * time.Second) // (5s, 10s]
	s.observe(2 * time.Minute) // +Inf
	st := s.stats()
	// rank 50 of 98 in (1ms, 2.5ms]: 1ms + 1.5ms*50/98.
	if want := time.Millisecond + 1500*time.Microsecond*50/98; absDiff(st.P50, want) > time.Microsecond {
		t.Errorf("P50 = %v, want %v", st.P50, want)
	}
	// rank 99: the one in (5s, 10s], at its upper end.
	if st.P99 != 10*time.Second {
		t.Errorf("P99 = %v, want 10s", st.P99)
	}
}

func absDiff(a, b time.Duration) time.Duration {
	if a > b {
		return a - b
	}
	return b - a
}

func TestMirror_Metrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(Config{Workers: 1}, reg)
	ok := sha256.Sum256([]byte("ok"))
	m.Submit(Copy{Model: "m", Revision: "r2", Send: constSend(200, "ok")}).Primary(200, ok)
	m.Submit(Copy{Model: "m", Revision: "r2", Send: constSend(200, "ko")}).Primary(200, ok)
	m.Submit(Copy{Model: "m", Revision: "r2", Send: constSend(503, "ok")}).Primary(200, ok)
	m.Submit(Copy{Model: "m", Revision: "r2", Send: constSend(200, "ok")}).Abandon()
	m.Submit(Copy{Model: "m", Revision: "r2", Send: func(context.Context) (int, io.ReadCloser, error) {
		return 0, nil, errors.New("refused")
	}}).Primary(200, ok)
	m.Submit(Copy{Model: "n", Revision: "r9", Send: constSend(200, "ok")}).Primary(200, ok)
	waitFor(t, "verdicts", func() bool {
		s := stats(t, m, "m", "r2")
		return s.Matched+s.Mismatched+s.Unpaired+s.Errors == 5 && stats(t, m, "n", "r9").Matched == 1
	})
	m.Close()
	m.Submit(Copy{Model: "m", Revision: "r2", Send: constSend(200, "ok")}) // dropped: closed

	want := map[string]float64{
		"m/r2/match": 1, "m/r2/mismatch": 2, "m/r2/error": 1, "m/r2/unpaired": 1, "m/r2/dropped": 1,
		"n/r9/match": 1, "n/r9/mismatch": 0, "n/r9/error": 0, "n/r9/unpaired": 0, "n/r9/dropped": 0,
	}
	if got := counterValues(t, reg); !maps.Equal(got, want) {
		t.Errorf("tandem_shadow_requests_total = %v, want %v", got, want)
	}
	if got := histogramCounts(t, reg); got["m/r2"] != 4 || got["n/r9"] != 1 || len(got) != 2 {
		t.Errorf("duration sample counts = %v, want m/r2: 4 answered, n/r9: 1", got)
	}

	t.Run("Forget", func(t *testing.T) {
		m.Forget("m")
		if m.Stats("m") != nil {
			t.Error("Stats after Forget")
		}
		want := map[string]float64{"n/r9/match": 1, "n/r9/mismatch": 0, "n/r9/error": 0, "n/r9/unpaired": 0, "n/r9/dropped": 0}
		if got := counterValues(t, reg); !maps.Equal(got, want) {
			t.Errorf("tandem_shadow_requests_total after Forget = %v, want %v", got, want)
		}
		if got := histogramCounts(t, reg); len(got) != 1 || got["n/r9"] != 1 {
			t.Errorf("duration series after Forget = %v", got)
		}
	})

	t.Run("second Mirror on the same registry", func(t *testing.T) {
		m2 := New(Config{Workers: 1}, reg)
		m2.Close()
	})
}

// gather gathers reg and calls fn with each sample of the family name and
// its labels.
func gather(t *testing.T, reg *prometheus.Registry, name string, fn func(labels map[string]string, counter float64, samples uint64)) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			fn(labels, mt.GetCounter().GetValue(), mt.GetHistogram().GetSampleCount())
		}
	}
}

// counterValues returns tandem_shadow_requests_total by
// "model/revision/result".
func counterValues(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	gather(t, reg, "tandem_shadow_requests_total", func(l map[string]string, v float64, _ uint64) {
		out[l["model"]+"/"+l["revision"]+"/"+l["result"]] = v
	})
	return out
}

// histogramCounts returns tandem_shadow_duration_seconds' sample count by
// "model/revision".
func histogramCounts(t *testing.T, reg *prometheus.Registry) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	gather(t, reg, "tandem_shadow_duration_seconds", func(l map[string]string, _ float64, n uint64) {
		out[l["model"]+"/"+l["revision"]] = n
	})
	return out
}
