package pool

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// RawTransport is a lean HTTP/1.1 RoundTripper for one instance: it writes
// the request and reads the response head on the caller's goroutine, over a
// pool of keep-alive connections, with no readLoop/writeLoop goroutines and
// no channel hand-offs per request as http.Transport has. On 2 shared cores
// that took the gateway's CPU per request from 47 to 34 us (docs/benchmarks.md).
// It does not do Expect: 100-continue, HTTP/2 or upgrades (the gateway sends
// those through http.Transport).
type RawTransport struct {
	Addr   string
	mu     sync.Mutex
	idle   []*rawConn
	closed bool
}

type rawConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

var dialer = &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

func (t *RawTransport) get(ctx context.Context) (*rawConn, bool, error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		pc := t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return pc, true, nil
	}
	t.mu.Unlock()
	c, err := dialer.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, false, err
	}
	return &rawConn{c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}, false, nil
}

func (t *RawTransport) put(pc *rawConn) {
	t.mu.Lock()
	if !t.closed && len(t.idle) < 1024 {
		t.idle = append(t.idle, pc)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	pc.c.Close()
}

// CloseIdleConnections closes pooled connections and refuses to pool more.
func (t *RawTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.closed = true
	t.mu.Unlock()
	for _, pc := range idle {
		pc.c.Close()
	}
}

var longAgo = time.Unix(1, 0)

// RoundTrip sends req on a pooled connection. A reused connection that
// fails before any answer byte is retried once on a fresh one when the
// request has no body (the server may have closed it while idle).
func (t *RawTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, reused, err := t.roundTrip(req)
		if err != nil && reused && attempt == 0 && (req.Body == nil || req.Body == http.NoBody) && req.Context().Err() == nil {
			continue
		}
		return resp, err
	}
}

func (t *RawTransport) roundTrip(req *http.Request) (*http.Response, bool, error) {
	ctx := req.Context()
	pc, reused, err := t.get(ctx)
	if err != nil {
		return nil, false, err
	}
	stop := context.AfterFunc(ctx, func() { pc.c.SetDeadline(longAgo) })
	if err := req.Write(pc.bw); err == nil {
		err = pc.bw.Flush()
	}
	if err != nil {
		stop()
		pc.c.Close()
		return nil, reused, err
	}
	resp, err := http.ReadResponse(pc.br, req)
	if err != nil {
		stop()
		pc.c.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, reused, err
	}
	resp.Body = &rawBody{rc: resp.Body, pc: pc, t: t, stop: stop, keep: !resp.Close && !req.Close}
	return resp, reused, nil
}

type rawBody struct {
	rc   io.ReadCloser
	pc   *rawConn
	t    *RawTransport
	stop func() bool
	keep bool
	done bool
}

func (b *rawBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if errors.Is(err, io.EOF) {
		b.finish(true)
	}
	return n, err
}

func (b *rawBody) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	if b.stop() && complete && b.keep {
		b.t.put(b.pc)
		return
	}
	b.pc.c.Close()
}

func (b *rawBody) Close() error {
	b.finish(false)
	return nil
}
