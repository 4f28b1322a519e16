package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// DefaultIdleTimeout is how long a pooled connection to an instance may sit
// unused before it is closed (http.Transport's IdleConnTimeout as set by
// http.DefaultTransport).
const DefaultIdleTimeout = 90 * time.Second

// maxIdle bounds the pooled connections per instance.
const maxIdle = 1024

// peekAfter is how long a connection must have been idle before get looks
// whether the instance closed it: an instance's keep-alive timeout is
// seconds, and the look is a system call (a few microseconds on a busy VM)
// that a connection reused at once does not need. An instance that dies
// under load is met by forward's retry instead.
const peekAfter = time.Second

// max1xx bounds the interim answers read before the final one, as
// http.Transport does, so a broken instance cannot keep a request forever.
const max1xx = 10

// RawTransport is a lean HTTP/1.1 RoundTripper for one instance: it writes
// the request and reads the response head on the caller's goroutine, over a
// pool of keep-alive connections, with no readLoop/writeLoop goroutines and
// no channel hand-offs per request as http.Transport has. On 2 shared cores
// that took the gateway's CPU per request from 47 to 34 us (docs/benchmarks.md).
//
// Interim (1xx) answers are read past, never taken as final; 101 Switching
// Protocols is final and hands the connection to the caller (see Upgraded).
// A connection goes back to the pool only when its answer was read to the
// end and neither side asked to close it; a pooled one idle for a second or
// more is checked, without blocking, for a close by the instance before it
// is used again, and one unused for IdleTimeout is closed. It does not send Expect: 100-continue (a proxy
// answers that itself, as nginx does) or HTTP/2.
//
// The zero value is ready for Addr. It is safe for concurrent use.
type RawTransport struct {
	Addr string
	// IdleTimeout closes pooled connections unused this long; zero means
	// DefaultIdleTimeout. Set it before first use.
	IdleTimeout time.Duration

	mu     sync.Mutex
	idle   []*rawConn // oldest first: put appends, get takes the last
	reaper *time.Timer
	closed bool
}

type rawConn struct {
	c      net.Conn
	sc     syscall.RawConn // nil when c is not a TCP connection
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

var dialer = &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

// CallError is a failed call to an instance: it says how far the call got,
// which decides whether the request may go again.
type CallError struct {
	Err error
	// Sent is true once some of the request may have reached the instance;
	// false when the connection could not be made (nothing was sent, so any
	// request may go again, to this instance or another).
	Sent bool
	// Answered is true when some of the instance's answer had arrived
	// before the failure.
	Answered bool
	// Reused is true when the call went over a pooled connection.
	Reused bool
}

func (e *CallError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *CallError) Unwrap() error { return e.Err }

func (t *RawTransport) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return DefaultIdleTimeout
}

// get returns a pooled connection that the instance has not closed, or a
// new one.
func (t *RawTransport) get(ctx context.Context) (*rawConn, bool, error) {
	for {
		t.mu.Lock()
		n := len(t.idle)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		pc := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		idle := time.Since(pc.idleAt)
		if idle < t.idleTimeout() && (idle < peekAfter && pc.br.Buffered() == 0 || pc.alive()) {
			return pc, true, nil
		}
		pc.c.Close()
	}
	c, err := dialer.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, false, err
	}
	pc := &rawConn{c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}
	if tc, ok := c.(*net.TCPConn); ok {
		pc.sc, _ = tc.SyscallConn()
	}
	return pc, false, nil
}

// alive reports whether a pooled connection can carry a request: the
// instance has not closed it (an instance that exited, or its idle
// timeout) and sent nothing unasked. One non-blocking peek, no wait.
func (pc *rawConn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	if pc.sc == nil {
		return true
	}
	return peekIdle(pc.sc)
}

func (t *RawTransport) put(pc *rawConn) {
	pc.idleAt = time.Now()
	t.mu.Lock()
	if !t.closed && len(t.idle) < maxIdle {
		t.idle = append(t.idle, pc)
		if t.reaper == nil {
			t.reaper = time.AfterFunc(t.idleTimeout(), t.reap)
		}
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	pc.c.Close()
}

// reap closes the connections unused for IdleTimeout and runs again while
// any are left.
func (t *RawTransport) reap() {
	d := t.idleTimeout()
	now := time.Now()
	t.mu.Lock()
	i := 0
	for i < len(t.idle) && now.Sub(t.idle[i].idleAt) >= d {
		i++
	}
	old := make([]*rawConn, i)
	copy(old, t.idle[:i])
	t.idle = append(t.idle[:0], t.idle[i:]...)
	clear(t.idle[len(t.idle):cap(t.idle)])
	if len(t.idle) > 0 && !t.closed {
		t.reaper.Reset(d - now.Sub(t.idle[0].idleAt))
	} else {
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, pc := range old {
		pc.c.Close()
	}
}

// Idle returns the number of pooled connections.
func (t *RawTransport) Idle() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.idle)
}

// CloseIdleConnections closes pooled connections and refuses to pool more.
func (t *RawTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.closed = true
	if t.reaper != nil {
		t.reaper.Stop()
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, pc := range idle {
		pc.c.Close()
	}
}

var longAgo = time.Unix(1, 0)

// RoundTrip implements http.RoundTripper: Send without interim answers.
// The error is a *CallError.
func (t *RawTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.Send(req.Context(), req, nil)
}

// Send writes req (its URL's request URI, req.Host, req.Header, req.Body of
// req.ContentLength bytes, -1 meaning chunked with req.Trailer) on a
// connection to the instance and reads the answer's head. Interim answers
// other than 100 Continue are passed to got1xx when it is not nil (an error
// it returns fails the call). The response body must be read to EOF or
// closed; reading it to EOF fills resp.Trailer and returns the connection
// to the pool. A 101 answer to a request with an Upgrade header has a body
// of type *Upgraded. The call is bounded by ctx (req's own context is not
// looked at, so that a caller need not copy req to set one): when it is done,
// the connection is closed, whatever stage the call is at. Send closes
// req.Body. Errors are *CallError.
func (t *RawTransport) Send(ctx context.Context, req *http.Request, got1xx func(code int, h http.Header) error) (*http.Response, error) {
	pc, reused, err := t.get(ctx)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &CallError{Err: err}
	}
	fail := func(err error, answered bool) (*http.Response, error) {
		pc.c.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, &CallError{Err: err, Sent: true, Answered: answered, Reused: reused}
	}
	stop := context.AfterFunc(ctx, func() { pc.c.SetDeadline(longAgo) })
	err = req.Write(pc.bw)
	if err == nil {
		err = pc.bw.Flush()
	}
	if err != nil {
		stop()
		return fail(err, false)
	}
	if _, err := pc.br.Peek(1); err != nil {
		stop()
		return fail(err, false)
	}
	var resp *http.Response
	for n := 0; ; n++ {
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			stop()
			return fail(err, true)
		}
		if resp.StatusCode < 100 {
			stop()
			return fail(fmt.Errorf("invalid status %d", resp.StatusCode), true)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if n == max1xx {
			stop()
			return fail(fmt.Errorf("more than %d interim (1xx) answers", max1xx), true)
		}
		if resp.StatusCode != http.StatusContinue && got1xx != nil {
			if err := got1xx(resp.StatusCode, resp.Header); err != nil {
				stop()
				return fail(err, true)
			}
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if req.Header.Get("Upgrade") == "" || !stop() {
			return fail(errors.New("101 Switching Protocols to a request that did not ask to upgrade"), true)
		}
		resp.Body = &Upgraded{Conn: pc.c, r: pc.br}
		return resp, nil
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		t.finish(pc, stop, keep)
		return resp, nil
	}
	resp.Body = &rawBody{rc: resp.Body, pc: pc, t: t, stop: stop, keep: keep}
	return resp, nil
}

// finish ends a call on pc: back to the pool when the answer was read to the
// end, the context did not end it and neither side asked to close.
func (t *RawTransport) finish(pc *rawConn, stop func() bool, keep bool) {
	if stop() && keep {
		t.put(pc)
		return
	}
	pc.c.Close()
}

// Upgraded is the body of a 101 Switching Protocols answer: the connection
// to the instance, no longer pooled nor bound by the request's context. Its
// reads start with anything the instance sent after the 101 head.
type Upgraded struct {
	net.Conn
	r *bufio.Reader
}

// Read reads what the instance sent after its 101 answer.
func (u *Upgraded) Read(p []byte) (int, error) { return u.r.Read(p) }

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
	if err == io.EOF {
		b.done = true
		b.t.finish(b.pc, b.stop, b.keep)
	}
	return n, err
}

func (b *rawBody) Close() error {
	if !b.done {
		b.done = true
		b.stop()
		b.pc.c.Close()
	}
	return nil
}
