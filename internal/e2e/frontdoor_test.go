package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem/internal/controller"
)

// rssBytes reads a process's resident memory from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// A body that trickles in gets 408 within timeouts.request and frees the
// instance for the next client at once; 65 KiB of request headers get 431;
// neither grows tandem's memory (issue: 500 one-MiB headers once took it
// from 361 MB to 1.2 GB).
func TestFrontDoor_TrickleAndHugeHeaders(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "fd", "dedicated", nil, "min: 1\nmax: 1\ncontainer_concurrency: 1", "startup: 20s\nrequest: 2s"))
	s.waitFor("ready", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "fd")
	pid := s.cmd.Process.Pid

	// The trickle: a declared body of 100 bytes, the headers alone first,
	// then one byte every 300ms (30s for all of it, timeouts.request is 2s).
	c, err := net.Dial("tcp", s.gateway)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /models/fd/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	answered := make(chan *http.Response, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answered <- nil
			return
		}
		answered <- resp
	}()
	var resp *http.Response
trickle:
	for i := 0; i < 100; i++ {
		select {
		case resp = <-answered:
			break trickle
		case <-time.After(300 * time.Millisecond):
			c.Write([]byte("x"))
		}
	}
	if resp == nil {
		select {
		case resp = <-answered:
			if resp != nil {
				b, _ := io.ReadAll(resp.Body)
				t.Logf("answered after the whole body: %d %s", resp.StatusCode, b)
			}
		case <-time.After(10 * time.Second):
		}
		t.Fatalf("the trickling request got no answer before its body was complete; log:\n%s", s.log.String())
	}
	if resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("trickling body: %d, want 408 or 504", resp.StatusCode)
	}
	// The only slot is free again: the next client is served.
	if r := s.call("GET", "/models/fd/echo", ""); r.code != 200 {
		t.Fatalf("after the trickle: %v", r)
	}

	before := rssBytes(t, pid)
	big := strings.Repeat("a", 65<<10)
	for i := 0; i < 500; i++ {
		req, _ := http.NewRequest("GET", "http://"+s.gateway+"/models/fd/echo", nil)
		req.Header.Set("X-Big", big)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request %d with a 65 KiB header: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("request %d with a 65 KiB header: %d, want 431", i, resp.StatusCode)
		}
	}
	after := rssBytes(t, pid)
	t.Logf("tandem RSS %d MiB before, %d MiB after 500 requests with 65 KiB headers", before>>20, after>>20)
	if grew := after - before; grew > 64<<20 {
		t.Errorf("tandem's memory grew by %d MiB over 500 oversized headers", grew>>20)
	}
	if r := s.call("GET", "/models/fd/echo", ""); r.code != 200 {
		t.Fatalf("after the oversized headers: %v", r)
	}
}
