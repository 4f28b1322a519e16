package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tandem/internal/trace"
)

// HeaderColdStart is the gateway's answer header that says a request
// waited for an instance to start (gateway.HeaderColdStart).
const HeaderColdStart = "X-Tandem-Cold-Start"

// Target is where and what to send.
type Target struct {
	// URL is the model's base, such as http://127.0.0.1:8080/models/iris;
	// a request's path is appended to it.
	URL string
	// Method defaults to POST when there is a body, GET otherwise.
	Method string
	// Path and Body are the defaults for trace lines that give none.
	Path string
	Body []byte
	// Header is sent with every request (Content-Type, for example).
	Header http.Header
	// Timeout bounds one request (default 60s).
	Timeout time.Duration
}

// Result is one request's outcome.
type Result struct {
	// Scheduled is when the request was due, from the start of the run.
	Scheduled time.Duration
	// Latency runs from the scheduled time (not the moment it was sent, so
	// a late send counts) to the end of the response body.
	Latency time.Duration
	// Status is the HTTP status, 0 when there was no response.
	Status int
	// ColdStart is the gateway's X-Tandem-Cold-Start answer.
	ColdStart bool
	// Err says what went wrong: a transport error, or the status line of
	// an answer of 400 or more. Empty on success.
	Err string
}

// OK reports whether the request succeeded.
func (r Result) OK() bool { return r.Err == "" }

// Progress is read while a run goes on. Its counters only grow.
type Progress struct {
	Sent, Done, Errors atomic.Int64
}

// Runner sends traces open loop. The zero Runner is ready to use.
type Runner struct {
	// Client sends the requests; nil means a client with a keep-alive
	// pool sized for load generation.
	Client *http.Client
	// MaxInFlight bounds outstanding requests (default 10000). A request
	// due while the bound is reached fails at once instead of waiting, so
	// the run stays open loop.
	MaxInFlight int
}

// ErrClientLimit is the error of a request dropped by Runner.MaxInFlight.
var ErrClientLimit = errors.New("load generator: too many requests in flight")

func defaultClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// Run sends every request of tr at its time from now on, and returns one
// Result per request, in trace order, once all have finished. progress may
// be nil. When ctx ends, requests not yet sent are not sent and are left
// out of the results.
func (r *Runner) Run(ctx context.Context, tr *trace.Trace, tg Target, progress *Progress) []Result {
	client := r.Client
	if client == nil {
		client = defaultClient()
		defer client.CloseIdleConnections()
	}
	limit := int64(r.MaxInFlight)
	if limit <= 0 {
		limit = 10000
	}
	if tg.Timeout <= 0 {
		tg.Timeout = 60 * time.Second
	}
	if progress == nil {
		progress = &Progress{}
	}
	base := strings.TrimRight(tg.URL, "/")
	results := make([]Result, len(tr.Requests))
	var inflight atomic.Int64
	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	start := time.Now()
	sent := 0
loop:
	for i, req := range tr.Requests {
		due := start.Add(req.At)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				break loop
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			break
		}
		sent = i + 1
		progress.Sent.Add(1)
		results[i].Scheduled = req.At
		if inflight.Add(1) > limit {
			inflight.Add(-1)
			results[i].Err = ErrClientLimit.Error()
			progress.Done.Add(1)
			progress.Errors.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer inflight.Add(-1)
			send(ctx, client, base, tg, req, due, &results[i])
			progress.Done.Add(1)
			if results[i].Err != "" {
				progress.Errors.Add(1)
			}
		}()
	}
	wg.Wait()
	return results[:sent]
}

func send(ctx context.Context, client *http.Client, base string, tg Target, req trace.Request, due time.Time, res *Result) {
	path := req.Path
	if path == "" {
		path = tg.Path
	}
	var body io.Reader
	var n int64
	switch {
	case req.Body != "":
		body, n = strings.NewReader(req.Body), int64(len(req.Body))
	case tg.Body != nil:
		body, n = bytes.NewReader(tg.Body), int64(len(tg.Body))
	}
	method := tg.Method
	if method == "" {
		method = http.MethodGet
		if body != nil {
			method = http.MethodPost
		}
	}
	rctx, cancel := context.WithTimeout(ctx, tg.Timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(rctx, method, base+path, body)
	if err != nil {
		res.Err = err.Error()
		return
	}
	hr.ContentLength = n
	for k, v := range tg.Header {
		hr.Header[k] = v
	}
	resp, err := client.Do(hr)
	if err != nil {
		res.Latency = time.Since(due)
		res.Err = err.Error()
		return
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	res.Latency = time.Since(due)
	res.Status = resp.StatusCode
	res.ColdStart = resp.Header.Get(HeaderColdStart) == "true"
	switch {
	case resp.StatusCode >= 400:
		res.Err = fmt.Sprintf("HTTP %s", resp.Status)
	case err != nil:
		res.Err = "reading the answer: " + err.Error()
	}
}
