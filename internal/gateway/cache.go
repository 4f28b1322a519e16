package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"tandem/internal/cache"
	"tandem/internal/inference"
)

// HeaderCache says how the response cache took a cacheable request: hit
// (answered from the cache, no instance involved), miss (an instance
// answered; a successful answer is kept), or bypass (the client asked for
// a fresh answer with Cache-Control: no-cache or no-store).
const HeaderCache = "X-Tandem-Cache"

// MaxCacheBody bounds the body of a pass-through POST the cache reads to
// make its key; a larger body goes to the instance uncached.
const MaxCacheBody = 8 << 20

// keyedHeaders are the request headers an answer is keyed on besides the
// body: those that change what a model server answers with the same body.
// An answer whose Vary names any other header is not kept.
var keyedHeaders = []string{"Content-Type", "Accept", "Accept-Encoding", inference.HeaderBinaryLength}

// lookup is one cacheable request: its key, and the cache and revision the
// key was made for.
type lookup struct {
	ex  *Exchange
	c   *cache.Cache
	rev string
	key cache.Key
}

// cached looks a cacheable request up in the deployment's response cache,
// right after admission and before any instance is acquired. On a hit it
// answers w, finishes the exchange as a hit (no instance time, counted
// apart by the cost meter) and returns done. Otherwise it returns the
// writer to answer through: on a miss, one that keeps a successful answer
// when the exchange finishes. target is the request's escaped path and
// query; jsonPrefix, when > 0, the length of the JSON part of a body in
// the v2 binary data extension.
func (ex *Exchange) cached(w http.ResponseWriter, r *http.Request, target string, body []byte, jsonPrefix int) (http.ResponseWriter, bool) {
	d := ex.Deployment
	rev, on := d.Cache.Enabled()
	if !on {
		return w, false
	}
	if bypass(r.Header) {
		w.Header().Set(HeaderCache, "bypass")
		d.Metrics.CacheBypass.Inc()
		return w, false
	}
	req := cache.Request{Revision: rev, Caller: ex.caller(), Method: r.Method, Target: target, Body: body, JSONPrefix: jsonPrefix}
	var hdr [2 * 4]string
	req.Header = hdr[:0]
	for _, k := range keyedHeaders {
		req.Header = append(req.Header, k, strings.Join(r.Header.Values(k), ","))
	}
	lk := &lookup{ex: ex, c: d.Cache, rev: rev, key: req.Key()}
	now := time.Now()
	if e, ok := lk.c.Get(lk.key, now); ok {
		d.Metrics.CacheHit.Inc()
		writeEntry(w, e, now)
		ex.hit = true
		ex.Finish(http.StatusOK, false, nil)
		return w, true
	}
	d.Metrics.CacheMiss.Inc()
	w.Header().Set(HeaderCache, "miss")
	rec := &recorder{ResponseWriter: w, lk: lk, limit: int(d.Cache.Config().MaxBytes / cache.MaxEntryFraction)}
	ex.OnFinish(rec.keep)
	return rec, false
}

// caller is who the cache keeps an answer for: the tenant an
// authentication stage named, or else a digest of the credentials the
// instance itself would see; "" for an anonymous request. One caller's
// answers are never served to another.
func (ex *Exchange) caller() string {
	if ex.Tenant != "" {
		return "tenant:" + ex.Tenant
	}
	h := ex.Header
	if h.Get("Authorization") == "" && h.Get("Cookie") == "" && h.Get("X-Api-Key") == "" {
		return ""
	}
	sum := sha256.New()
	for _, k := range []string{"Authorization", "Cookie", "X-Api-Key"} {
		for _, v := range h.Values(k) {
			fmt.Fprintf(sum, "%s:%d:%s\n", k, len(v), v)
		}
	}
	return "credentials:" + hex.EncodeToString(sum.Sum(nil))
}

// bypass reports whether the client asked for a fresh answer.
func bypass(h http.Header) bool {
	for _, v := range h.Values("Cache-Control") {
		if hasToken([]string{v}, "no-cache") || hasToken([]string{v}, "no-store") {
			return true
		}
	}
	return hasToken(h.Values("Pragma"), "no-cache")
}

// writeEntry answers w with a kept answer.
func writeEntry(w http.ResponseWriter, e *cache.Entry, now time.Time) {
	h := w.Header()
	for i := 0; i+1 < len(e.Header); i += 2 {
		h[e.Header[i]] = append(h[e.Header[i]], e.Header[i+1])
	}
	h.Set(HeaderCache, "hit")
	h.Set(HeaderColdStart, "false")
	h.Set("Age", strconv.Itoa(int(now.Sub(e.Stored)/time.Second)))
	h.Set("Content-Length", strconv.Itoa(len(e.Body)))
	w.WriteHeader(http.StatusOK)
	w.Write(e.Body)
}

// dropped are the answer's headers a kept answer does not keep: those of
// the connection or of this one exchange.
var dropped = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Trailer": true, "Upgrade": true, "Content-Length": true, "Date": true, "Age": true,
	HeaderCache: true, HeaderColdStart: true,
}

// recorder passes a missed request's answer on to the client and copies
// it, up to limit bytes, to be kept when the exchange finishes.
type recorder struct {
	http.ResponseWriter
	lk      *lookup
	limit   int
	status  int
	header  []string
	length  int // the answer's Content-Length
	expires time.Time
	body    []byte
	skip    bool // the answer is not to be kept
}

func (rc *recorder) WriteHeader(code int) {
	if rc.status == 0 && code >= 200 {
		rc.status = code
		rc.snapshot()
	}
	rc.ResponseWriter.WriteHeader(code)
}

func (rc *recorder) Write(b []byte) (int, error) {
	if rc.status == 0 {
		rc.WriteHeader(http.StatusOK)
	}
	if !rc.skip {
		if len(rc.body)+len(b) > rc.limit {
			rc.skip, rc.body = true, nil
		} else {
			rc.body = append(rc.body, b...)
		}
	}
	return rc.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and the deadlines.
func (rc *recorder) Unwrap() http.ResponseWriter { return rc.ResponseWriter }

// snapshot decides, from the answer's head, whether it may be kept, and
// copies the headers to keep.
func (rc *recorder) snapshot() {
	h := rc.ResponseWriter.Header()
	// Only an answer whose length is known is kept: one cut short (the
	// instance failed, the client went away) never looks whole.
	n, err := strconv.Atoi(h.Get("Content-Length"))
	if rc.status != http.StatusOK || err != nil || n < 0 || n > rc.limit || !storable(h) {
		rc.skip = true
		return
	}
	rc.length = n
	rc.body = make([]byte, 0, n)
	if age, ok := maxAge(h); ok {
		rc.expires = time.Now().Add(age)
	}
	for k, vs := range h {
		if dropped[k] {
			continue
		}
		for _, v := range vs {
			rc.header = append(rc.header, k, v)
		}
	}
}

// keep stores the answer once the exchange has finished with it whole.
func (rc *recorder) keep(ex *Exchange, res Result) {
	if rc.skip || rc.status != http.StatusOK || res.Status != http.StatusOK || len(rc.body) != rc.length {
		return
	}
	e := &cache.Entry{Header: rc.header, Body: rc.body, Expires: rc.expires}
	rc.lk.c.Put(rc.lk.key, rc.lk.rev, e, time.Now())
}

// storable reports whether an answer with headers h may be kept: not
// no-store, private or no-cache (the cache does not revalidate), no
// cookie, not a stream of events, no trailers, and varying by no header
// the key does not hold.
func storable(h http.Header) bool {
	cc := h.Values("Cache-Control")
	for _, tok := range []string{"no-store", "private", "no-cache"} {
		if hasToken(cc, tok) {
			return false
		}
	}
	if len(h.Values("Set-Cookie")) > 0 || len(h.Values("Trailer")) > 0 {
		return false
	}
	if ct := h.Get("Content-Type"); ct != "" {
		if base, _, _ := mime.ParseMediaType(ct); base == "text/event-stream" {
			return false
		}
	}
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			f = http.CanonicalHeaderKey(strings.TrimSpace(f))
			if f == "" {
				continue
			}
			keyed := false
			for _, k := range keyedHeaders {
				keyed = keyed || f == k
			}
			if !keyed {
				return false
			}
		}
	}
	return true
}

// maxAge returns the answer's own lifetime for a shared cache (s-maxage,
// else max-age), when it gives one.
func maxAge(h http.Header) (time.Duration, bool) {
	var age time.Duration
	found := false
	for _, v := range h.Values("Cache-Control") {
		for _, f := range strings.Split(v, ",") {
			k, val, _ := strings.Cut(strings.TrimSpace(f), "=")
			k = strings.ToLower(k)
			if k != "s-maxage" && k != "max-age" {
				continue
			}
			n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
			if err != nil || n < 0 {
				return 0, true // unreadable: treat as stale at once
			}
			if k == "s-maxage" || !found {
				age, found = time.Duration(n)*time.Second, true
			}
		}
	}
	return age, found
}

// cachePassThrough is the response cache of the pass-through door: GETs
// without a body, and POSTs to the paths the manifest's cache.paths lists,
// whose body it reads (up to MaxCacheBody, within timeouts.request) to
// make the key. done means w was answered: a hit, or an error reading the
// body.
func (ex *Exchange) cachePassThrough(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
	man := ex.Deployment.Manifest()
	if man.Cache == nil || upgradeType(r.Header) != "" {
		return w, false
	}
	target := r.URL.EscapedPath()
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		target += "?" + r.URL.RawQuery
	}
	switch {
	case r.Method == http.MethodGet && r.ContentLength == 0:
		return ex.cached(w, r, target, nil, 0)
	case r.Method == http.MethodPost && man.Cache.HasPath(modelPath(r)) && len(r.Trailer) == 0:
	default:
		return w, false
	}
	if r.ContentLength > MaxCacheBody {
		return w, false
	}
	body, whole, answered := bufferBody(w, r, ex, MaxCacheBody)
	if answered {
		return w, true
	}
	if !whole {
		return w, false
	}
	return ex.cached(w, r, target, body, 0)
}

// cacheOpenAI is the response cache of the OpenAI door: requests that are
// not streamed and ask for temperature 0 (deterministic sampling), and
// embeddings (no sampling at all).
func (ex *Exchange) cacheOpenAI(w http.ResponseWriter, r *http.Request, path string, body []byte) (http.ResponseWriter, bool) {
	if ex.Deployment.Manifest().Cache == nil {
		return w, false
	}
	var p struct {
		Temperature *float64 `json:"temperature"`
		Stream      bool     `json:"stream"`
	}
	if json.Unmarshal(body, &p) != nil || p.Stream {
		return w, false
	}
	if path != "/v1/embeddings" && (p.Temperature == nil || *p.Temperature != 0) {
		return w, false
	}
	return ex.cached(w, r, path, body, 0)
}

// Cached looks a v2 REST infer request up (inference.Cacher): its body is
// keyed by its JSON part, canonical, and its binary data by their bytes.
func (e v2Exchange) Cached(w http.ResponseWriter, r *http.Request, body []byte) (http.ResponseWriter, bool) {
	n, _ := strconv.Atoi(r.Header.Get(inference.HeaderBinaryLength))
	target := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	return e.Exchange.cached(w, r, target, body, n)
}

var _ inference.Cacher = v2Exchange{}
