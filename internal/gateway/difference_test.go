package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/pool"
)

// corpus is raw HTTP/1.1 exchanges that a proxy must pass through as the
// instance answers them. Each is sent once straight to an instance and
// once through the gateway ("/models/m" prefixed to each request target),
// and the answers compared.
var corpus = []struct{ name, raw string }{
	{"get", "GET /echo HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"query odd encodings", "GET /echo?a=%zz&b=%2F;c&d=+%20&&=x&%26=%3D&e=%E2%82%AC&f HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"empty query", "GET /echo? HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"escaped slash", "GET /a%2Fb/echo%2F HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"escaped path", "GET /echo/%41%7E%20x HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"duplicate headers", "GET /echo HTTP/1.1\r\nHost: H\r\nX-Dup: 1\r\nX-Dup: 2\r\nAccept: a\r\nAccept: b\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"},
	{"duplicate answer headers", "GET /dup HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"hop headers named by Connection", "GET /echo HTTP/1.1\r\nHost: H\r\nConnection: X-Private, keep-alive\r\nX-Private: secret\r\nKeep-Alive: 5\r\nProxy-Authorization: x\r\nTE: trailers\r\n\r\n"},
	{"post", "POST /echo HTTP/1.1\r\nHost: H\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"},
	{"post empty", "POST /echo HTTP/1.1\r\nHost: H\r\nContent-Length: 0\r\n\r\n"},
	{"put chunked", "PUT /echo HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"},
	{"chunked with trailers", "POST /echo HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: chunked\r\nTrailer: X-Req-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Req-Sum: 7\r\n\r\n"},
	{"expect 100-continue", "POST /echo HTTP/1.1\r\nHost: H\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"},
	{"expect then plain", "POST /echo HTTP/1.1\r\nHost: H\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab" + "GET /echo?second HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"early hints", "GET /early HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"chunked answer", "GET /chunked HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"answer trailers", "GET /trailers HTTP/1.1\r\nHost: H\r\nTE: trailers\r\n\r\n"},
	{"head", "HEAD /echo HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"head with content-length", "HEAD /headcl HTTP/1.1\r\nHost: H\r\n\r\n" + "GET /headcl HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"204", "GET /status?code=204 HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"304", "GET /status?code=304 HTTP/1.1\r\nHost: H\r\nIf-None-Match: \"v1\"\r\n\r\n"},
	{"404 of the instance", "GET /status?code=404 HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"options", "OPTIONS /echo HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"delete with body", "DELETE /echo HTTP/1.1\r\nHost: H\r\nContent-Length: 3\r\n\r\nabc"},
	{"client says close", "GET /echo HTTP/1.1\r\nHost: H\r\nConnection: close\r\n\r\n"},
	{"instance says close", "GET /close HTTP/1.1\r\nHost: H\r\n\r\n"}, // the gateway keeps the client's connection: TestForward_InstanceCloses
	{"pipelined", "GET /echo?1 HTTP/1.1\r\nHost: H\r\n\r\n" + "POST /echo?2 HTTP/1.1\r\nHost: H\r\nContent-Length: 3\r\n\r\ntwo" + "HEAD /echo?3 HTTP/1.1\r\nHost: H\r\n\r\n" + "GET /chunked?4 HTTP/1.1\r\nHost: H\r\n\r\n" + "GET /status?code=204 HTTP/1.1\r\nHost: H\r\n\r\n"},
	{"http/1.0", "GET /echo HTTP/1.0\r\nHost: H\r\n\r\n"},
	{"big answer", "GET /big?n=300000 HTTP/1.1\r\nHost: H\r\n\r\n"},
}

// TestForward_Difference: every exchange of the corpus gets the same
// answers through the gateway as straight from the instance: status,
// end-to-end headers (minus Date and X-Tandem-*), body, trailers, and the
// interim answers before them.
func TestForward_Difference(t *testing.T) {
	h := instanceHandler()
	hs := newHarness(t, h, 1, 10*time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	direct := &http.Server{Handler: h}
	go direct.Serve(ln)
	t.Cleanup(func() { direct.Close() })
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			want := rawExchange(t, ln.Addr().String(), tc.raw)
			got := rawExchange(t, hs.Addr, viaGateway(tc.raw))
			if w, g := describe(want), describe(got); w != g {
				t.Errorf("straight to the instance:\n%s\nthrough the gateway:\n%s", w, g)
			}
		})
	}
}

// viaGateway puts /models/m before each request target of raw.
func viaGateway(raw string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(raw, "\r\n") {
		if m, rest, ok := strings.Cut(line, " /"); ok && strings.HasSuffix(line, "HTTP/1.1\r\n") || ok && strings.HasSuffix(line, "HTTP/1.0\r\n") {
			if !strings.Contains(m, ":") {
				line = m + " /models/m/" + rest
			}
		}
		b.WriteString(line)
	}
	return b.String()
}

// describe renders answers for comparison, without what a proxy may
// rightly change.
func describe(resps []*http.Response) string {
	var b strings.Builder
	for _, r := range resps {
		fmt.Fprintf(&b, "%s\n", r.Status)
		for _, k := range sortedKeys(r.Header) {
			if k == "Date" || strings.HasPrefix(k, "X-Tandem-") || pool.IsHop(k, r.Header["Connection"]) {
				continue
			}
			fmt.Fprintf(&b, "  %s: %q\n", k, r.Header[k])
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(&b, "  body %d %q\n", r.ContentLength, body)
		for _, k := range sortedKeys(r.Trailer) {
			fmt.Fprintf(&b, "  trailer %s: %q\n", k, r.Trailer[k])
		}
	}
	return b.String()
}

func sortedKeys(h http.Header) []string {
	var ks []string
	for k := range h {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestForward_PathTricks: paths that climb out of the model's prefix are
// cleaned by the gateway's router (a redirect to the clean path) and never reach an
// instance as they are.
func TestForward_PathTricks(t *testing.T) {
	hs := newHarness(t, instanceHandler(), 1, 10*time.Second)
	for _, target := range []string{"/models/m/../x", "/models/m/a/../../n/echo", "/models/m/./echo", "/models/m//echo"} {
		resps := rawExchange(t, hs.Addr, "GET "+target+" HTTP/1.1\r\nHost: H\r\n\r\n")
		r := resps[len(resps)-1]
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode/100 != 3 || strings.Contains(r.Header.Get("Location"), "..") || strings.Contains(string(body), "GET /") {
			t.Errorf("%s: %d %v %q", target, r.StatusCode, r.Header, body)
		}
	}
}

// TestForward_NoCrossTalk: many clients at once, each with its own token
// that the instance echoes, mixing Expect: 100-continue, requests aborted
// midway and clients that read slowly: no client ever sees a token that is
// not its own. CI runs all 100,000 requests; -short runs 10,000.
func TestForward_NoCrossTalk(t *testing.T) {
	total := 100_000
	if testing.Short() {
		total = 10_000
	}
	const clients = 64
	hs := newHarness(t, instanceHandler(), 2, 10*time.Second)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mismatch atomic.Int64
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn
			var br *bufio.Reader
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for {
				i := next.Add(1)
				if i > int64(total) {
					return
				}
				if conn == nil {
					var err error
					if conn, err = net.Dial("tcp", hs.Addr); err != nil {
						t.Error(err)
						return
					}
					br = bufio.NewReaderSize(conn, 64)
				}
				tok := fmt.Sprintf("c%d-%d", c, i)
				var req string
				switch i % 8 {
				case 1:
					req = "POST /models/m/tok?" + tok + " HTTP/1.1\r\nHost: H\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab"
				case 2: // aborted: half a body, then gone
					io.WriteString(conn, "POST /models/m/tok?"+tok+" HTTP/1.1\r\nHost: H\r\nContent-Length: 10\r\n\r\nabc")
					conn.Close()
					conn = nil
					continue
				case 3: // aborted after the head, before the answer
					io.WriteString(conn, "GET /models/m/tok?"+tok+"&d=1ms HTTP/1.1\r\nHost: H\r\n\r\n")
					conn.Close()
					conn = nil
					continue
				case 4:
					req = "POST /models/m/tok?" + tok + " HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
				default:
					req = "GET /models/m/tok?" + tok + " HTTP/1.1\r\nHost: H\r\n\r\n"
				}
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.WriteString(conn, req); err != nil {
					t.Error(err)
					return
				}
				var body []byte
				for {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Errorf("%s: %v", tok, err)
						return
					}
					if resp.StatusCode == 100 {
						continue
					}
					if i%16 == 5 { // a slow reader: the answer in dribs
						p := make([]byte, 1)
						for {
							n, err := resp.Body.Read(p)
							body = append(body, p[:n]...)
							if err != nil {
								break
							}
							time.Sleep(time.Microsecond)
						}
					} else {
						body, _ = io.ReadAll(resp.Body)
					}
					resp.Body.Close()
					break
				}
				if string(body) != tok {
					mismatch.Add(1)
					t.Errorf("client %d sent %s, got %q", c, tok, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	if mismatch.Load() > 0 {
		t.Fatalf("%d answers went to the wrong client", mismatch.Load())
	}
}

// TestForward_InstanceCloses: an instance that closes its connection after
// answering does not close the client's: the next request on it is served.
func TestForward_InstanceCloses(t *testing.T) {
	hs := newHarness(t, instanceHandler(), 1, 10*time.Second)
	resps := rawExchange(t, hs.Addr, viaGateway("GET /close HTTP/1.1\r\nHost: H\r\n\r\n"+"GET /tok?after HTTP/1.1\r\nHost: H\r\n\r\n"))
	if b, _ := io.ReadAll(resps[1].Body); len(resps) != 2 || string(b) != "after" || resps[0].Close {
		t.Fatalf("%d answers, second %q, first closed %v", len(resps), b, resps[0].Close)
	}
}
