package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"tandem/internal/pool"
	"tandem/internal/problem"
	"tandem/internal/tracing"
)

// DefaultUpgradeIdle is how long an upgraded connection (a WebSocket) may
// carry nothing in either direction before the gateway closes it, when the
// Route does not say. timeouts.request does not bound such a connection
// once it is upgraded.
const DefaultUpgradeIdle = 5 * time.Minute

// Route says where forward sends one request and what it may do when the
// instance fails before answering.
type Route struct {
	// Lease is the instance that takes the request. The caller releases
	// it (forward may release it earlier, when it sends the request to
	// another instance).
	Lease *pool.Lease
	// Model names the deployment in errors.
	Model string
	// Path is the escaped path to request on the instance; "" means the
	// rest of r's path after /models/{name}, escaped as the client sent it.
	Path string
	// Reacquire, when not nil, leases another instance for the one retry
	// a request may get (see forward); (*pool.Pool).AcquireExcept fits. It
	// may block as Acquire does. forward releases the lease it returns.
	Reacquire func(ctx context.Context, failed *pool.Instance) (*pool.Lease, error)
	// Retried, when not nil, is called each time a request goes again
	// (the tandem_retries_total counter).
	Retried func()
	// UpgradeIdle bounds how long an upgraded connection may carry nothing
	// either way; zero means DefaultUpgradeIdle.
	UpgradeIdle time.Duration
	// WriteError, when not nil, answers the errors of a call that got no
	// answer in the shape of the request's protocol; nil means problem.Write.
	WriteError func(http.ResponseWriter, error)
}

// errConnect refuses CONNECT: the gateway is not a tunnel to anywhere.
func errConnect() *problem.Error {
	return problem.New(http.StatusNotImplemented, "method_not_supported",
		"CONNECT is not supported: models are served at /models/{name}/{path}")
}

// forward proxies one request to rt.Lease's instance without
// httputil.ReverseProxy: one outgoing request struct, no per-request clone,
// trace context, goroutine or flush timer (pool.RawTransport).
//
// ctx bounds the exchange (the caller sets timeouts.request on it): the
// upload of the request's body, the wait for the answer and its copy to
// the client. A body that has not arrived by then is answered 408; an
// answer that has not, 504.
//
// Expect: 100-continue is answered by the gateway itself (net/http sends
// 100 when forward first reads the body) and not sent on. Interim answers
// of the instance other than 100 (103 Early Hints) are relayed. Trailers go
// both ways. An upgrade (WebSocket) is tunnelled until either side closes
// or it is idle for rt.UpgradeIdle.
//
// A request that failed before any byte of an answer reached the client,
// because the instance could not be reached, closed the connection or died,
// goes once more, to the instance rt.Reacquire gives, when nothing of it
// was sent (the connection was refused), or when it is GET, HEAD or
// OPTIONS, or its body was not yet read. Never after the client received
// anything. A failure after the answer's head was sent cuts the client's
// connection (http.ErrAbortHandler), so a truncated body never looks whole.
func (g *Gateway) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, rt Route) {
	if r.Method == http.MethodConnect {
		problem.Write(w, errConnect())
		return
	}
	lease := rt.Lease
	// One allocation for the outgoing request's parts.
	x := &exchange{w: w, body: r.Body, writeError: rt.WriteError}
	h := x.outHeader(r)
	upgrade := upgradeType(r.Header)
	if upgrade != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{upgrade}
	}
	path := rt.Path
	if path == "" {
		path = modelPath(r)
	}
	x.url = url.URL{Opaque: path, RawQuery: r.URL.RawQuery, ForceQuery: r.URL.ForceQuery}
	if strings.HasPrefix(path, "//") { // Opaque would read as a host
		x.url.Opaque = ""
		x.url.Path, _ = url.PathUnescape(path)
		x.url.RawPath = path
	}
	var body io.ReadCloser
	var trailer http.Header
	rc := http.NewResponseController(w)
	deadline, bounded := ctx.Deadline()
	if r.ContentLength != 0 {
		body = x
		if r.ContentLength < 0 && len(r.Trailer) > 0 {
			trailer = r.Trailer // filled in by net/http when the body ends
		}
		if bounded {
			// The upload counts against timeouts.request: a client that
			// trickles its body frees the instance when time is up.
			rc.SetReadDeadline(deadline)
			defer rc.SetReadDeadline(time.Time{})
		}
	}

	var resp *http.Response
	var call tracing.Call // each attempt's span, when traced
	defer call.End()
	for attempt := 0; ; attempt++ {
		x.out = http.Request{
			Method:        r.Method,
			URL:           &x.url,
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        h,
			Body:          body,
			ContentLength: r.ContentLength,
			Trailer:       trailer,
			Host:          lease.Instance.Addr,
		}
		call.Start(ctx, lease.Instance.ID, attempt+1)
		call.Inject(h)
		var err error
		resp, err = lease.Instance.Raw.Send(ctx, &x.out, x.relay1xx)
		if err == nil {
			call.Answered(resp.StatusCode)
			break
		}
		call.Fail(err)
		if attempt == 0 && rt.Reacquire != nil && x.retryable(ctx, r, err) {
			if next, aerr := rt.Reacquire(ctx, lease.Instance); aerr == nil {
				defer next.Release()
				lease.Release()
				lease = next
				if rt.Retried != nil {
					rt.Retried()
				}
				continue
			}
		}
		x.fail(ctx, rt.Model, lease.Instance, err)
		return
	}
	if r.ContentLength != 0 && bounded {
		rc.SetReadDeadline(time.Time{}) // the body is in; what follows is the next request's
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		g.tunnel(w, resp, upgrade, rt)
		return
	}
	defer resp.Body.Close()
	if bounded {
		// A client that reads the answer slowly frees the instance when
		// time is up too.
		rc.SetWriteDeadline(deadline)
		defer rc.SetWriteDeadline(time.Time{})
	}
	rconn := resp.Header["Connection"]
	wh := w.Header()
	for k, v := range resp.Header {
		if !pool.IsHop(k, rconn) {
			wh[k] = v
		}
	}
	var announced []string
	if len(resp.Trailer) > 0 {
		announced = make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			announced = append(announced, k)
		}
		wh["Trailer"] = announced
	}
	w.WriteHeader(resp.StatusCode)
	stream := resp.ContentLength == -1
	if ct := resp.Header["Content-Type"]; !stream && len(ct) > 0 {
		if base, _, _ := mime.ParseMediaType(ct[0]); base == "text/event-stream" {
			stream = true
		}
	}
	bufp := g.bufs.p.Get().(*[]byte)
	defer g.bufs.p.Put(bufp)
	buf := *bufp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client is gone or too slow; closing the body drops the upstream connection
			}
			if stream {
				rc.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The head is out: cut the client's connection so that the
			// truncated answer cannot look complete.
			panic(http.ErrAbortHandler)
		}
	}
	for k, v := range resp.Trailer {
		if !isAnnounced(announced, k) {
			k = http.TrailerPrefix + k
		}
		wh[k] = v
	}
}

// forwardedProto is the X-Forwarded-Proto value; shared, never modified.
var forwardedProto = []string{"http"}

// outHeader copies r's end-to-end headers for the instance and adds the
// X-Forwarded-* headers.
func (x *exchange) outHeader(r *http.Request) http.Header {
	conn := r.Header["Connection"]
	h := make(http.Header, len(r.Header)+3)
	for k, v := range r.Header {
		if k == "Expect" || pool.IsHop(k, conn) {
			continue
		}
		h[k] = v
	}
	if te := r.Header["Te"]; len(te) > 0 && hasToken(te, "trailers") {
		h["Te"] = []string{"trailers"} // an end-to-end promise (gRPC), the one TE value sent on
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil // no default Go User-Agent
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
		host = strings.Join(prior, ", ") + ", " + host
	}
	x.xff[0], x.xfh[0] = host, r.Host
	h["X-Forwarded-For"] = x.xff[:]
	h["X-Forwarded-Host"] = x.xfh[:]
	h["X-Forwarded-Proto"] = forwardedProto
	return h
}

// modelPath returns the rest of r's escaped path after /models/{name}, so
// that the instance sees %2F and other escapes as the client sent them.
func modelPath(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/models/")
	if !ok {
		return "/" + r.PathValue("path")
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i:]
	}
	return "/"
}

// upgradeType returns the protocol a request asks to upgrade to, or "".
func upgradeType(h http.Header) string {
	if !hasToken(h["Connection"], "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// hasToken reports whether a comma-separated header holds token, in any case.
func hasToken(vs []string, token string) bool {
	for _, v := range vs {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

func isAnnounced(keys []string, k string) bool {
	for _, a := range keys {
		if a == k {
			return true
		}
	}
	return false
}

// exchange is the state of one forwarded request: the outgoing request
// (one allocation for all its parts); it reads the client's body for it,
// counting what it took, and relays interim answers.
type exchange struct {
	out      http.Request
	url      url.URL
	xff, xfh [1]string
	w        http.ResponseWriter
	body     io.ReadCloser
	read     int64 // bytes of the client's body read so far
	err      error // the error reading the client's body, other than EOF
	sent     bool  // the client received something (an interim answer)
	// writeError is Route.WriteError.
	writeError func(http.ResponseWriter, error)
}

// Read reads the client's body.
func (x *exchange) Read(p []byte) (int, error) {
	n, err := x.body.Read(p)
	x.read += int64(n)
	if err != nil && err != io.EOF {
		x.err = err
	}
	return n, err
}

// Close does nothing: the outgoing request's writer closes its body, even
// when a retry will read it again; net/http closes the client's body.
func (x *exchange) Close() error { return nil }

// relay1xx sends an interim answer of the instance on to the client, past
// the gateway's own status recording, and puts the final answer's headers
// back as they were.
func (x *exchange) relay1xx(code int, h http.Header) error {
	w := x.w
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	wh := w.Header()
	saved := maps.Clone(wh)
	clear(wh)
	conn := h["Connection"]
	for k, v := range h {
		if !pool.IsHop(k, conn) {
			wh[k] = v
		}
	}
	w.WriteHeader(code)
	clear(wh)
	maps.Copy(wh, saved)
	x.sent = true
	return nil
}

// retryable reports whether a failed call may go again (see forward).
func (x *exchange) retryable(ctx context.Context, r *http.Request, err error) bool {
	if ctx.Err() != nil || x.sent || x.err != nil {
		return false
	}
	var ce *pool.CallError
	if !errors.As(err, &ce) || ce.Answered {
		return false
	}
	if !ce.Sent {
		return true
	}
	if x.read > 0 {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return r.ContentLength != 0 // its body, all of it, is still with the client
}

// fail answers a call that got no answer: the client's fault when its body
// did not arrive, otherwise the instance's (pool.UpstreamError).
func (x *exchange) fail(ctx context.Context, model string, in *pool.Instance, err error) {
	write := problem.Write
	if x.writeError != nil {
		write = x.writeError
	}
	// The connection ends with this answer: net/http would otherwise read
	// (discard) what is left of the client's body before sending it, and a
	// body that trickles would hold the answer back as long as it likes.
	x.w.Header().Set("Connection", "close")
	if x.err != nil {
		if errors.Is(x.err, os.ErrDeadlineExceeded) {
			write(x.w, problem.New(http.StatusRequestTimeout, "body_timeout",
				fmt.Sprintf("model %q: the request body did not arrive within timeouts.request", model)))
			return
		}
		write(x.w, problem.New(http.StatusBadRequest, "read_error", "reading the request body: "+x.err.Error()))
		return
	}
	write(x.w, pool.UpstreamError(ctx, model, in, err))
}

// tunnel carries an upgraded connection both ways until either side ends
// it or it is idle for rt.UpgradeIdle; timeouts.request no longer applies.
func (g *Gateway) tunnel(w http.ResponseWriter, resp *http.Response, reqUp string, rt Route) {
	up := resp.Body.(*pool.Upgraded)
	defer up.Close()
	respUp := resp.Header.Get("Upgrade")
	if !strings.EqualFold(respUp, reqUp) {
		problem.Write(w, problem.New(http.StatusBadGateway, "upstream_error",
			fmt.Sprintf("model %q: instance %s switched to protocol %q, asked for %q", rt.Model, rt.Lease.Instance.ID, respUp, reqUp)))
		return
	}
	h := make(http.Header, len(resp.Header)+len(w.Header())+2)
	maps.Copy(h, w.Header())
	rconn := resp.Header["Connection"]
	for k, v := range resp.Header {
		if !pool.IsHop(k, rconn) {
			h[k] = v
		}
	}
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{respUp}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		problem.Write(w, problem.New(http.StatusInternalServerError, "upgrade_failed", "cannot take over the client's connection: "+err.Error()))
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Time{}) // forward's deadlines were for the request
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	h.Write(brw)
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	idle := rt.UpgradeIdle
	if idle <= 0 {
		idle = DefaultUpgradeIdle
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(up, conn, brw.Reader, idle, &last)
		up.Close()
		conn.Close()
	}()
	pipe(conn, up, up, idle, &last)
	up.Close()
	conn.Close()
	<-done
}

// pipe copies src (read through r) to dst until either fails or neither
// direction has carried a byte for idle (last is the shared clock of the
// two directions, in unix nanoseconds).
func pipe(dst, src net.Conn, r io.Reader, idle time.Duration, last *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := r.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction is busy
			}
			return
		}
	}
}
