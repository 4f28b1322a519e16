package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"tandem/internal/controller"
	"tandem/internal/pool"
	"tandem/internal/problem"
	"tandem/internal/shadow"
)

// Shadow traffic (docs/rollout.md): a share of a model's requests is
// mirrored to another revision. The copy is sent by the mirror's own
// workers after the primary was admitted; the caller only ever sees the
// primary's answer, and a full mirror queue drops the copy, never the
// request. Only bodies known to be at most maxShadowBody are mirrored (the
// copy needs the body in memory); others are not, and are counted as
// dropped.

// maxShadowBody is the largest request body a shadow copy is made of.
const maxShadowBody = 1 << 20

// SetMirror turns shadow traffic on; it must be called before the gateway
// serves.
func (g *Gateway) SetMirror(m *shadow.Mirror) { g.mirror = m }

// mirrorCopy submits a copy of a request (method, path and query for the
// instance, headers, body in memory) to the shadow revision sd. It returns
// the pair the primary's answer is reported to, or nil when not mirrored.
func (g *Gateway) mirrorCopy(sd *controller.Deployment, method, target string, h http.Header, body []byte) *shadow.Pair {
	if g.mirror == nil || sd == nil {
		return nil
	}
	h = h.Clone()
	return g.mirror.Submit(shadow.Copy{
		Model:    sd.Name,
		Revision: sd.Revision(),
		Timeout:  sd.Manifest().Timeouts.Request.D() + sd.Manifest().Timeouts.Startup.D(),
		Send: func(ctx context.Context) (int, io.ReadCloser, error) {
			lease, err := sd.Pool.Acquire(ctx)
			if err != nil {
				return 0, nil, err
			}
			req, err := http.NewRequestWithContext(ctx, method, "http://"+lease.Instance.Addr+target, bytes.NewReader(body))
			if err != nil {
				lease.Release()
				return 0, nil, err
			}
			for k, v := range h {
				if !pool.IsHop(k, h["Connection"]) {
					req.Header[k] = v
				}
			}
			req.ContentLength = int64(len(body))
			req.Header.Set("X-Tandem-Shadow", "true")
			resp, err := lease.Instance.Raw.RoundTrip(req)
			if err != nil {
				lease.Release()
				return 0, nil, err
			}
			return resp.StatusCode, &releaseBody{ReadCloser: resp.Body, lease: lease}, nil
		},
	})
}

// releaseBody gives the shadow's instance back once its answer is read.
type releaseBody struct {
	io.ReadCloser
	lease *pool.Lease
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.lease.Release()
	return err
}

// mirrorPassThrough prepares the mirroring of a pass-through request: it
// reads a small body into memory (r.Body then reads from it) within the
// request's timeout. It returns a nil pair when the request is not
// mirrored, and answered when reading the body failed and the client has
// its answer.
func (g *Gateway) mirrorPassThrough(w http.ResponseWriter, r *http.Request, ex *Exchange) (*shadow.Pair, *shadow.Digest, bool) {
	if g.mirror == nil || ex.Shadow == nil || r.ContentLength < 0 || r.ContentLength > maxShadowBody || upgradeType(r.Header) != "" {
		return nil, nil, false // not mirrored (see the package comment)
	}
	var body []byte
	if r.ContentLength > 0 {
		var whole, answered bool
		if body, whole, answered = bufferBody(w, r, ex, maxShadowBody); answered {
			return nil, nil, true
		}
		if !whole {
			return nil, nil, false
		}
	}
	target := modelPath(r)
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	pair := g.mirrorCopy(ex.Shadow, r.Method, target, r.Header, body)
	if pair == nil {
		return nil, nil, false
	}
	return pair, shadow.NewDigest(), false
}

// bufferBody reads up to limit bytes of r's body into memory within the
// exchange's timeouts.request and puts them back in front of what is left,
// so that r.Body reads as before. whole says the body fit (r.ContentLength
// is then its length). When reading fails, the client is answered (408
// for a body that did not arrive in time, else 400), the exchange
// finished, and answered is true.
func bufferBody(w http.ResponseWriter, r *http.Request, ex *Exchange, limit int64) (body []byte, whole, answered bool) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(ex.Timeout()))
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	rc.SetReadDeadline(time.Time{})
	if err != nil {
		pe := problem.New(http.StatusBadRequest, "read_error", "reading the request body: "+err.Error())
		if errors.Is(err, os.ErrDeadlineExceeded) {
			pe = problem.New(http.StatusRequestTimeout, "body_timeout",
				fmt.Sprintf("model %q: the request body did not arrive within timeouts.request", ex.Model))
		}
		w.Header().Set(HeaderColdStart, "false")
		w.Header().Set("Connection", "close") // or net/http reads the rest of the body first
		problem.Write(w, pe)
		ex.Finish(pe.Status, false, pe)
		return nil, false, true
	}
	if int64(len(body)) > limit {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		return nil, false, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return body, true, false
}

// teeBody feeds a primary's answer into the shadow's digest as it is read
// and reports it to the pair when closed.
type teeBody struct {
	io.ReadCloser
	status int
	dig    *shadow.Digest
	pair   *shadow.Pair
	done   bool
	eof    bool
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.dig.Write(p[:n])
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *teeBody) Close() error {
	if !b.done {
		b.done = true
		if b.eof {
			b.pair.Primary(b.status, b.dig.Sum())
		} else {
			b.pair.Abandon()
		}
	}
	return b.ReadCloser.Close()
}
