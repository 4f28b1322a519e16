package loadgen

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/trace"
)

func TestGenerate(t *testing.T) {
	const rate, d = 20.0, 100 * time.Second
	count := func(tr *trace.Trace, from, to time.Duration) int {
		n := 0
		for _, r := range tr.Requests {
			if r.At >= from && r.At < to {
				n++
			}
		}
		return n
	}
	tests := []struct {
		pattern Pattern
		check   func(t *testing.T, tr *trace.Trace)
	}{
		{Constant, func(t *testing.T, tr *trace.Trace) {
			if tr.Len() != 2000 || tr.Requests[1].At != 50*time.Millisecond {
				t.Fatalf("%d requests, second at %v", tr.Len(), tr.Requests[1].At)
			}
		}},
		{Steps, func(t *testing.T, tr *trace.Trace) {
			for k, want := range []int{125, 250, 375, 500} {
				if got := count(tr, d*time.Duration(k)/4, d*time.Duration(k+1)/4); got != want {
					t.Errorf("step %d: %d requests, want %d", k, got, want)
				}
			}
		}},
		{Burst, func(t *testing.T, tr *trace.Trace) {
			if tr.Len() != 2000 {
				t.Fatalf("%d requests", tr.Len())
			}
			for k := 0; k < 4; k++ {
				from := d * time.Duration(k) / 4
				if got := count(tr, from, from+d/40); got != 500 {
					t.Errorf("burst %d: %d requests in its first tenth, want all 500", k, got)
				}
			}
		}},
		{Sporadic, func(t *testing.T, tr *trace.Trace) {
			// Poisson: about rate×d, and gaps spread like an exponential
			// (about e^-1 of them longer than the mean).
			if n := tr.Len(); math.Abs(float64(n)-2000) > 200 {
				t.Fatalf("%d requests, want about 2000", n)
			}
			long := 0
			for i := 1; i < tr.Len(); i++ {
				if tr.Requests[i].At-tr.Requests[i-1].At > 50*time.Millisecond {
					long++
				}
			}
			if f := float64(long) / float64(tr.Len()); math.Abs(f-math.Exp(-1)) > 0.05 {
				t.Fatalf("%.2f of gaps longer than the mean, want about 0.37", f)
			}
		}},
		{Sine, func(t *testing.T, tr *trace.Trace) {
			night, noon := count(tr, 0, d/10), count(tr, d*45/100, d*55/100)
			if math.Abs(float64(tr.Len())-2000) > 200 || noon < 5*night {
				t.Fatalf("%d requests; %d at night, %d at noon", tr.Len(), night, noon)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.pattern), func(t *testing.T) {
			spec := Spec{Pattern: tt.pattern, Rate: rate, Duration: d, Seed: 7}
			tr, err := Generate(spec)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range tr.Requests {
				if r.At < 0 || r.At >= d || (i > 0 && r.At < tr.Requests[i-1].At) {
					t.Fatalf("request %d at %v: not sorted within [0, %v)", i, r.At, d)
				}
			}
			tt.check(t, tr)
			again, _ := Generate(spec)
			if !reflect.DeepEqual(tr, again) {
				t.Fatal("the same spec gave a different trace")
			}
		})
	}
	other, _ := Generate(Spec{Pattern: Sporadic, Rate: rate, Duration: d, Seed: 8})
	same, _ := Generate(Spec{Pattern: Sporadic, Rate: rate, Duration: d, Seed: 7})
	if reflect.DeepEqual(other, same) {
		t.Fatal("another seed gave the same trace")
	}
}

func TestGenerate_errors(t *testing.T) {
	for _, s := range []Spec{
		{Pattern: Constant, Rate: 0, Duration: time.Second},
		{Pattern: Constant, Rate: math.NaN(), Duration: time.Second},
		{Pattern: Constant, Rate: 1, Duration: 0},
		{Pattern: Constant, Rate: 1e9, Duration: time.Hour},
		{Pattern: "zigzag", Rate: 1, Duration: time.Second},
		{Pattern: Trace, Rate: 1, Duration: time.Second},
	} {
		if _, err := Generate(s); !errors.Is(err, ErrPattern) {
			t.Errorf("Generate(%v) = %v, want ErrPattern", s, err)
		}
	}
	if _, err := ParsePattern("zigzag"); !errors.Is(err, ErrPattern) {
		t.Error("ParsePattern(zigzag): no error")
	}
	if p, err := ParsePattern(" Sporadic "); err != nil || p != Sporadic {
		t.Errorf("ParsePattern = %v, %v", p, err)
	}
}

// TestRunner_Run checks that the runner is open loop: requests due while
// earlier ones are still being served leave anyway.
func TestRunner_Run(t *testing.T) {
	release := make(chan struct{})
	var inflight, peak, slow atomic.Int64
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			// The fast requests come after the slow ones: wait until those
			// are all in flight (a bound, not a timing check), so that the
			// peak shows them joining however the goroutines are scheduled.
			for deadline := time.Now().Add(10 * time.Second); slow.Load() < 5 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		} else {
			slow.Add(1)
		}
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+string(body))
		mu.Unlock()
		if r.URL.Path == "/slow" {
			<-release
		}
		switch r.URL.Path {
		case "/cold":
			w.Header().Set(HeaderColdStart, "true")
		case "/fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()

	tr := &trace.Trace{}
	for i := 0; i < 5; i++ {
		tr.Requests = append(tr.Requests, trace.Request{At: time.Duration(i) * time.Millisecond})
	}
	tr.Requests = append(tr.Requests,
		trace.Request{At: 6 * time.Millisecond, Path: "/cold"},
		trace.Request{At: 7 * time.Millisecond, Path: "/fail", Body: "x"},
	)
	var p Progress
	done := make(chan []Result)
	go func() {
		done <- (&Runner{}).Run(context.Background(), tr, Target{URL: srv.URL + "/", Path: "/slow"}, &p)
	}()
	// The five slow requests are all in flight at once, and the two after
	// them are answered while the slow ones still wait.
	for deadline := time.Now().Add(30 * time.Second); p.Done.Load() < 2 || inflight.Load() < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %d answered, %d in flight; a closed-loop runner waits for the slow ones", p.Done.Load(), inflight.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	res := <-done
	if peak.Load() < 6 {
		t.Fatalf("at most %d requests in flight; open loop, the fast ones join the 5 slow ones", peak.Load())
	}
	if len(res) != 7 || p.Sent.Load() != 7 || p.Done.Load() != 7 || p.Errors.Load() != 1 {
		t.Fatalf("%d results, progress %d/%d/%d", len(res), p.Sent.Load(), p.Done.Load(), p.Errors.Load())
	}
	for i, r := range res[:5] {
		if !r.OK() || r.Status != 200 || r.ColdStart || r.Scheduled != time.Duration(i)*time.Millisecond {
			t.Errorf("result %d = %+v", i, r)
		}
	}
	if r := res[5]; !r.OK() || !r.ColdStart {
		t.Errorf("cold result = %+v", r)
	}
	if r := res[6]; r.OK() || r.Status != 503 || r.Err != "HTTP 503 Service Unavailable" {
		t.Errorf("failed result = %+v", r)
	}
	// The slow ones waited for the release, which came after the others
	// were answered: their latency is longer.
	if res[0].Latency <= res[5].Latency {
		t.Errorf("slow latency %v <= fast %v", res[0].Latency, res[5].Latency)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{"GET /slow ": true, "GET /cold ": true, "POST /fail x": true}
	for _, g := range got {
		if !want[g] {
			t.Errorf("server saw %q", g)
		}
	}
}

func TestRunner_MaxInFlight(t *testing.T) {
	release := make(chan struct{})
	var seen atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		<-release
	}))
	defer srv.Close()
	defer close(release)
	tr := &trace.Trace{Requests: []trace.Request{{At: 0}, {At: 0}, {At: 10 * time.Millisecond}}}
	var p Progress
	done := make(chan []Result)
	go func() { done <- (&Runner{MaxInFlight: 2}).Run(context.Background(), tr, Target{URL: srv.URL}, &p) }()
	for p.Errors.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	release <- struct{}{}
	release <- struct{}{}
	res := <-done
	if res[2].Err != ErrClientLimit.Error() || seen.Load() != 2 {
		t.Fatalf("third result %+v; server saw %d", res[2], seen.Load())
	}
}

func TestRunner_cancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &trace.Trace{Requests: []trace.Request{{At: 0}, {At: time.Hour}}}
	var p Progress
	done := make(chan []Result)
	go func() { done <- (&Runner{}).Run(ctx, tr, Target{URL: srv.URL}, &p) }()
	for p.Done.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if res := <-done; len(res) != 1 || !res[0].OK() {
		t.Fatalf("results after cancel: %+v", res)
	}
}
