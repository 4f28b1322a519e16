package gateway

import (
	"context"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"tandem/internal/pool"
	"tandem/internal/problem"
)

// hopHeaders are removed in both directions (RFC 9110 7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHop(k string, conn []string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	for _, v := range conn {
		for _, f := range strings.Split(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

// forward proxies one request on lease without httputil.ReverseProxy: one
// request struct, no per-request clone, trace context or flush timer.
func (g *Gateway) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, lease *pool.Lease, path, model string) {
	conn := r.Header["Connection"]
	h := make(http.Header, len(r.Header)+3)
	for k, v := range r.Header {
		if isHop(k, conn) {
			continue
		}
		h[k] = v
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
		host = strings.Join(prior, ", ") + ", " + host
	}
	h["X-Forwarded-For"] = []string{host}
	h["X-Forwarded-Host"] = []string{r.Host}
	h["X-Forwarded-Proto"] = []string{"http"}
	body := r.Body
	if r.ContentLength == 0 {
		body = nil
	}
	out := &http.Request{
		Method:        r.Method,
		URL:           &url.URL{Scheme: "http", Host: lease.Instance.Addr, Path: path, RawQuery: r.URL.RawQuery},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          body,
		ContentLength: r.ContentLength,
		Host:          lease.Instance.Addr,
	}
	out = out.WithContext(ctx)
	resp, err := lease.Instance.Raw.RoundTrip(out)
	if err != nil {
		problem.Write(w, pool.UpstreamError(ctx, model, lease.Instance, err))
		return
	}
	defer resp.Body.Close()
	rconn := resp.Header["Connection"]
	wh := w.Header()
	for k, v := range resp.Header {
		if isHop(k, rconn) {
			continue
		}
		wh[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	stream := resp.ContentLength == -1
	if ct := resp.Header.Get("Content-Type"); !stream && ct != "" {
		if base, _, _ := mime.ParseMediaType(ct); base == "text/event-stream" {
			stream = true
		}
	}
	bufp := g.bufs.p.Get().(*[]byte)
	defer g.bufs.p.Put(bufp)
	buf := *bufp
	rc := http.NewResponseController(w)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if stream {
				rc.Flush()
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			return // headers are out: the client sees a truncated body
		}
	}
}
