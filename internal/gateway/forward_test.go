package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/gateway"
	"tandem/internal/manifest"
	"tandem/internal/pool"
	"tandem/internal/store"
)

// instanceHandler is the model server behind the gateway in these tests;
// each path is a behaviour the forwarding must carry through unchanged.
func instanceHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimPrefix(r.URL.Path, "/") {
		case "tok": // the concurrency test: the token back, tiny
			if r.ContentLength != 0 {
				io.Copy(io.Discard, r.Body)
			}
			if d, err := time.ParseDuration(r.URL.Query().Get("d")); err == nil {
				time.Sleep(d)
			}
			io.WriteString(w, r.URL.RawQuery)
		case "chunked":
			f := w.(http.Flusher)
			for i := range 3 {
				fmt.Fprintf(w, "part %d\n", i)
				f.Flush()
			}
		case "trailers":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body with trailers\n")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		case "status":
			code, _ := strconv.Atoi(r.URL.Query().Get("code"))
			w.Header().Set("Etag", `"v1"`)
			w.WriteHeader(code)
		case "headcl":
			w.Header().Set("Content-Length", "42")
			if r.Method != http.MethodHead {
				io.WriteString(w, strings.Repeat("x", 42))
			}
		case "early":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "after hints\n")
		case "close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "closing\n")
		case "dup":
			w.Header().Add("X-Dup", "a")
			w.Header().Add("X-Dup", "b")
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			io.WriteString(w, "dup\n")
		case "sleep":
			d, _ := time.ParseDuration(r.URL.Query().Get("d"))
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
			io.WriteString(w, "slept\n")
		case "big":
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			w.Write([]byte(strings.Repeat("b", n)))
		case "upgrade":
			if r.Header.Get("Upgrade") != "echo" {
				http.Error(w, "no upgrade", 400)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-From: instance\r\n\r\n")
			brw.Flush()
			for {
				line, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				brw.WriteString("echo: " + line)
				brw.Flush()
			}
		default: // echo what arrived, minus what a proxy adds
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			var b strings.Builder
			fmt.Fprintf(&b, "%s %s\n", r.Method, r.RequestURI) // not Proto: a hop's
			for _, k := range slices.Sorted(func(yield func(string) bool) {
				for k := range r.Header {
					if !yield(k) {
						return
					}
				}
			}) {
				if strings.HasPrefix(k, "X-Forwarded-") || k == "Expect" || pool.IsHop(k, r.Header["Connection"]) {
					continue
				}
				fmt.Fprintf(&b, "%s: %q\n", k, r.Header[k])
			}
			fmt.Fprintf(&b, "te %q cl %d\nbody %q\n", r.TransferEncoding, r.ContentLength, body)
			for _, k := range slices.Sorted(func(yield func(string) bool) {
				for k := range r.Trailer {
					if !yield(k) {
						return
					}
				}
			}) {
				fmt.Fprintf(&b, "trailer %s: %q\n", k, r.Trailer[k])
			}
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, b.String())
		}
	})
}

type harness struct {
	URL  string // the gateway
	Addr string // the gateway's host:port
	c    *controller.Controller
	fb   *fake.Backend
}

// newHarness runs a controller over the fake backend with one deployment
// "m" of the given scaling and request timeout, behind a gateway served by
// gateway.NewHTTPServer, and waits until ready instances are up.
func newHarness(t testing.TB, h http.Handler, ready int, request time.Duration) *harness {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fb := fake.New(h)
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb},
		DefaultBackend: "process", Tick: 20 * time.Millisecond})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	yaml := fmt.Sprintf("name: m\nmode: dedicated\nruntime: {command: [x]}\nscaling: {min: %d, max: %d}\ntimeouts: {request: %s}\n", ready, ready, request)
	m, err := manifest.Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = gateway.NewHTTPServer(gateway.New(c, nil), gateway.DefaultLimits)
	srv.Start()
	t.Cleanup(srv.Close)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if st, _ := c.Status("m"); st.Ready == ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("instances not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &harness{URL: srv.URL, Addr: srv.Listener.Addr().String(), c: c, fb: fb}
}

// rawExchange writes raw to addr and reads one answer per request in raw
// (interim answers included), then whether the server closed the
// connection when closeWait > 0.
func rawExchange(t testing.TB, addr, raw string) []*http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	reqs := parseRequests(t, raw)
	br := bufio.NewReader(conn)
	var out []*http.Response
	for _, req := range reqs {
		for {
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				t.Fatalf("reading the answer to %s %s: %v", req.Method, req.URL, err)
			}
			if resp.StatusCode >= 200 || resp.StatusCode == 101 {
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("reading the body of %s %s: %v", req.Method, req.URL, err)
				}
				resp.Body = io.NopCloser(strings.NewReader(string(b)))
				out = append(out, resp)
				break
			}
			out = append(out, resp)
		}
	}
	return out
}

func parseRequests(t testing.TB, raw string) []*http.Request {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(raw))
	var reqs []*http.Request
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return reqs
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("corpus request %d: %v", len(reqs), err)
		}
		io.Copy(io.Discard, req.Body)
		reqs = append(reqs, req)
	}
}

// TestForward_ExpectContinue is the reproduction: a request with
// Expect: 100-continue got 100, 100, 200 with an empty body, and the
// pooled connection went back with the real answer unread, which the next
// client then received.
func TestForward_ExpectContinue(t *testing.T) {
	hs := newHarness(t, instanceHandler(), 1, 10*time.Second)
	for i := range 20 {
		resps := rawExchange(t, hs.Addr, "POST /models/m/tok?expect"+strconv.Itoa(i)+" HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx")
		var codes []int
		for _, r := range resps {
			codes = append(codes, r.StatusCode)
		}
		if !slices.Equal(codes, []int{100, 200}) {
			t.Fatalf("codes %v, want [100 200]", codes)
		}
		if b, _ := io.ReadAll(resps[1].Body); string(b) != "expect"+strconv.Itoa(i) {
			t.Fatalf("body %q", b)
		}
		// The next client gets its own answer, not the one left behind.
		resp, err := http.Get(hs.URL + "/models/m/tok?plain" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "plain"+strconv.Itoa(i) {
			t.Fatalf("next client got %q", b)
		}
	}
}

// TestForward_SlowBody: a body that trickles in is answered 408 when
// timeouts.request is up, and the instance is free again.
func TestForward_SlowBody(t *testing.T) {
	hs := newHarness(t, instanceHandler(), 1, 300*time.Millisecond)
	conn, err := net.Dial("tcp", hs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /models/m/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte now and then, never all of it
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := io.WriteString(conn, "x"); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "body_timeout") {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if st, _ := hs.c.Status("m"); st.InFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the instance is still held")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestForward_SlowAnswer: an instance that does not answer within
// timeouts.request gets 504.
func TestForward_SlowAnswer(t *testing.T) {
	hs := newHarness(t, instanceHandler(), 1, 200*time.Millisecond)
	resp, err := http.Get(hs.URL + "/models/m/sleep?d=5s")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), "request_timeout") {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

// TestNewHTTPServer_Limits: headers over 64 KiB get 431 (net/http alone
// lets 4 KiB more through), CONNECT gets 501, both in tandem's shape.
func TestNewHTTPServer_Limits(t *testing.T) {
	hs := newHarness(t, instanceHandler(), 1, 10*time.Second)
	for _, tc := range []struct {
		name string
		raw  string
		code int
		want string
	}{
		{"63KiB", "GET /models/m/tok?ok HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 63<<10) + "\r\n\r\n", 200, "ok"},
		{"65KiB", "GET /models/m/tok HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 65<<10) + "\r\n\r\n", 431, "headers_too_large"},
		{"1MiB", "GET /models/m/tok HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n", 431, ""},
		{"CONNECT", "CONNECT /models/m/tok HTTP/1.1\r\nHost: x\r\n\r\n", 501, "method_not_supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", hs.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go io.WriteString(conn, tc.raw) // the server may answer before reading it all
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
				t.Fatalf("%d %.200s", resp.StatusCode, b)
			}
		})
	}
}

// TestForward_Upgrade: an upgraded connection is carried both ways and is
// not cut at timeouts.request.
func TestForward_Upgrade(t *testing.T) {
	hs := newHarness(t, instanceHandler(), 1, 200*time.Millisecond)
	conn, err := net.Dial("tcp", hs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /models/m/upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "echo" || resp.Header.Get("X-From") != "instance" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	for i := range 3 {
		if i == 2 {
			time.Sleep(400 * time.Millisecond) // past timeouts.request
		}
		fmt.Fprintf(conn, "hello %d\n", i)
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("echo: hello %d\n", i) {
			t.Fatalf("line %d: %q %v", i, line, err)
		}
	}
}

// TestForward_RetryOnCrash: with two instances under GET load, killing
// one fails no request: what it had not answered goes to the other.
func TestForward_RetryOnCrash(t *testing.T) {
	hs := newHarness(t, instanceHandler(), 2, 10*time.Second)
	st, _ := hs.c.Status("m")
	victim := st.Instances[0].ID
	var failed, ok atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tok := fmt.Sprintf("w%d-%d", w, i)
				d := ""
				if i%4 == 0 {
					d = "&d=20ms"
				}
				resp, err := client.Get(hs.URL + "/models/m/tok?" + tok + d)
				if err != nil {
					failed.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != tok+d {
					t.Errorf("%s: %d %q", tok, resp.StatusCode, b)
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for ok.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	hs.fb.Crash(victim)
	for n := ok.Load(); ok.Load() < n+500; {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed after a crash", failed.Load())
	}
}

// BenchmarkForward measures a warm GET through the gateway (client,
// gateway and instance in this process, loopback): ns/op and allocs/op of
// the whole exchange, of which forward is the part this package owns.
// Compare with BenchmarkForward_Direct for the cost of the hop.
func BenchmarkForward(b *testing.B) {
	hs := newHarness(b, instanceHandler(), 1, 10*time.Second)
	benchGet(b, hs.URL+"/models/m/tok?x")
}

// BenchmarkForward_Direct is BenchmarkForward's client straight to an
// instance: its figures are what the gateway adds to.
func BenchmarkForward_Direct(b *testing.B) {
	srv := httptest.NewServer(instanceHandler())
	defer srv.Close()
	benchGet(b, srv.URL+"/tok?x")
}

func benchGet(b *testing.B, url string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
