package lambda

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The Runtime API's headers (docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html).
const (
	HeaderRequestID     = "Lambda-Runtime-Aws-Request-Id"
	HeaderDeadline      = "Lambda-Runtime-Deadline-Ms"
	HeaderFunctionARN   = "Lambda-Runtime-Invoked-Function-Arn"
	HeaderTraceID       = "Lambda-Runtime-Trace-Id"
	HeaderClientContext = "Lambda-Runtime-Client-Context"
	HeaderIdentity      = "Lambda-Runtime-Cognito-Identity"
	headerErrorType     = "Lambda-Runtime-Function-Error-Type"
	trailerErrorBody    = "Lambda-Runtime-Function-Error-Body"
)

// Headers of the Invoke API's answers.
const (
	HeaderFunctionError = "X-Amz-Function-Error"
	HeaderAmznRequestID = "X-Amzn-RequestId"
	// HeaderClientContextIn is the Invoke API's client context (base64
	// JSON), passed to the function decoded.
	HeaderClientContextIn = "X-Amz-Client-Context"
)

// MaxPayload is Lambda's limit on a synchronous invocation's event and
// result: 6 MB.
const MaxPayload = 6 << 20

// ReadyPath is the ingress's readiness path: 200 once the function has
// asked for its first event (GET .../invocation/next), 503 before. A
// controller.Runtime for runtime.lambda sets it as the manifest's health
// path.
const ReadyPath = "/_tandem/lambda/ready"

// InvokeHeader marks a raw invocation (the Invoke API) to the ingress: its
// value must be InvokeToken(), which never leaves this process except on
// loopback to the ingress, so a client that sends the header through the
// gateway still gets its request turned into an API Gateway event.
const InvokeHeader = "X-Tandem-Lambda-Invoke"

var invokeToken = func() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}()

// InvokeToken is the value of InvokeHeader that the ingress takes as a
// raw invocation.
func InvokeToken() string { return invokeToken }

// ErrorBody is a function error as Lambda writes it.
type ErrorBody struct {
	Message    string          `json:"errorMessage"`
	Type       string          `json:"errorType"`
	StackTrace json.RawMessage `json:"stackTrace,omitempty"`
}

func errorJSON(typ, msg string) []byte {
	b, _ := json.Marshal(ErrorBody{Message: msg, Type: typ})
	return b
}

// invocation is one event on its way through a function.
type invocation struct {
	id            string
	payload       []byte
	deadline      time.Time
	clientContext string
	traceID       string
	done          chan result // receives exactly one result
	once          sync.Once
	timer         *time.Timer // the deadline's, once handed over; under function.mu
}

// result is how an invocation ended.
type result struct {
	payload []byte // the result, or the error JSON when failed
	// failed: the function reported an error (errType from it), or tandem
	// ended the invocation (errType Runtime.ExitError, Sandbox.Timedout,
	// Function.ResponseSizeTooLarge).
	failed  bool
	errType string
	timeout bool
}

// function is one instance's Runtime API and ingress.
//
// Who owns what: the ingress hands an event to the function's pending GET
// /next through the unbuffered events channel; from then on the Runtime
// API side owns it (f.current) until /response, /error, the deadline's
// timer or the instance's exit completes it, exactly once (complete).
// slot holds one event at a time: taken by the ingress before the hand-off
// and released when the event is completed (or withdrawn before it was
// handed over), so a request whose client gave up still keeps the next
// one waiting until the function is done with it, as in Lambda.
type function struct {
	id, name, arn string
	shape         string
	timeout       time.Duration
	log           *slog.Logger
	// kill stops the instance (the function timed out or failed its init);
	// it does not block.
	kill func(reason string)

	apiLn, ingLn net.Listener
	api, ing     *http.Server

	events chan *invocation
	slot   chan struct{}

	ready     chan struct{}
	readyOnce sync.Once
	// stopping closes when tandem decides to stop the instance (an
	// overrun, an init error), dead when it has ended: from either on,
	// the ingress takes no new event.
	stopping chan struct{}
	stopOnce sync.Once
	dead     chan struct{}
	deadOnce sync.Once

	mu      sync.Mutex
	current *invocation
	why     string // set before dead closes: how the instance ended
	initErr *ErrorBody
	reason  string      // why tandem stopped the instance, for its Exit
	overrun *invocation // the event whose overrun stops the instance
}

func newFunction(id, name, arn, shape string, timeout time.Duration, log *slog.Logger, kill func(string)) (*function, error) {
	f := &function{id: id, name: name, arn: arn, shape: shape, timeout: timeout, log: log, kill: kill,
		events: make(chan *invocation), slot: make(chan struct{}, 1), ready: make(chan struct{}), stopping: make(chan struct{}), dead: make(chan struct{})}
	var err error
	if f.apiLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("opening the Runtime API's listener: %w", err)
	}
	if f.ingLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		f.apiLn.Close()
		return nil, fmt.Errorf("opening the function's ingress listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", f.next)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", f.response)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", f.invocationError)
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", f.initError)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s %s is not a Runtime API route", r.Method, r.URL.Path))
	})
	f.api = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	f.ing = &http.Server{Handler: http.HandlerFunc(f.ingress), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go f.api.Serve(f.apiLn)
	go f.ing.Serve(f.ingLn)
	return f, nil
}

// apiAddr is the Runtime API's host:port (AWS_LAMBDA_RUNTIME_API).
func (f *function) apiAddr() string { return f.apiLn.Addr().String() }

// ingressAddr is where the gateway sends requests: the instance's address.
func (f *function) ingressAddr() string { return f.ingLn.Addr().String() }

// exited ends the function: the pending event fails with why, waiting
// requests are answered, and both listeners close once their answers are
// out.
func (f *function) exited(why string) {
	f.deadOnce.Do(func() {
		f.mu.Lock()
		f.why = why
		inv := f.current
		if inv == f.overrun {
			inv = nil // overran answers it, now that the instance has ended
		}
		f.mu.Unlock()
		close(f.dead)
		if inv != nil {
			f.complete(inv, result{failed: true, errType: "Runtime.ExitError",
				payload: errorJSON("Runtime.ExitError", fmt.Sprintf("RequestId: %s Error: Runtime exited: %s", inv.id, why))})
		}
		go f.shutdown()
	})
}

// shutdown closes both servers, letting answers in progress finish.
func (f *function) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range []*http.Server{f.api, f.ing} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Shutdown(ctx) != nil {
				s.Close()
			}
		}()
	}
	wg.Wait()
}

// stop records why tandem stops the instance, then stops it.
func (f *function) stop(reason string) {
	f.mu.Lock()
	if f.reason == "" {
		f.reason = reason
	}
	f.mu.Unlock()
	f.stopOnce.Do(func() { close(f.stopping) })
	f.kill(reason)
}

// exitWhy is how the instance ended ("" while it runs).
func (f *function) exitWhy() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.why
}

// stopReason is why tandem stopped the instance ("" when it did not).
func (f *function) stopReason() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reason
}

// complete ends inv with res, once, and frees the slot.
func (f *function) complete(inv *invocation, res result) {
	inv.once.Do(func() {
		f.mu.Lock()
		if f.current == inv {
			f.current = nil
		}
		if inv.timer != nil {
			inv.timer.Stop()
		}
		f.mu.Unlock()
		inv.done <- res
		<-f.slot
	})
}

// next is GET /runtime/invocation/next: the function is ready for an
// event and waits for one.
func (f *function) next(w http.ResponseWriter, r *http.Request) {
	f.readyOnce.Do(func() { close(f.ready) })
	f.mu.Lock()
	prev := f.current
	f.mu.Unlock()
	if prev != nil {
		// Asking for the next event answers none: the runtime lost the
		// previous one.
		f.complete(prev, result{failed: true, errType: "Runtime.NoResponse",
			payload: errorJSON("Runtime.NoResponse", fmt.Sprintf("RequestId: %s Error: the runtime asked for the next event without answering this one", prev.id))})
	}
	var inv *invocation
	select {
	case inv = <-f.events:
	case <-r.Context().Done():
		return
	case <-f.dead:
		writeAPIError(w, http.StatusInternalServerError, "Runtime.Stopped", "the instance is stopping")
		return
	}
	f.mu.Lock()
	f.current = inv
	inv.timer = time.AfterFunc(time.Until(inv.deadline), func() { f.overran(inv) })
	f.mu.Unlock()
	h := w.Header()
	h.Set(HeaderRequestID, inv.id)
	h.Set(HeaderDeadline, strconv.FormatInt(inv.deadline.UnixMilli(), 10))
	h.Set(HeaderFunctionARN, f.arn)
	h.Set(HeaderTraceID, inv.traceID)
	if inv.clientContext != "" {
		h.Set(HeaderClientContext, inv.clientContext)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(inv.payload)))
	w.WriteHeader(http.StatusOK)
	w.Write(inv.payload)
}

// overran ends an event the function still holds at its deadline, and the
// instance with it (Lambda stops a function that times out). The event is
// answered once the instance has ended, so that the next request cannot
// reach it.
func (f *function) overran(inv *invocation) {
	f.mu.Lock()
	held := f.current == inv
	if held {
		f.overrun = inv
	}
	f.mu.Unlock()
	if !held {
		return
	}
	f.stop(fmt.Sprintf("the function overran timeouts.request (%s) on request %s and was stopped", f.timeout, inv.id))
	select {
	case <-f.dead:
	case <-time.After(10 * time.Second): // a stop that does not end it
	}
	msg := fmt.Sprintf("RequestId: %s Error: Task timed out after %.2f seconds", inv.id, f.timeout.Seconds())
	f.complete(inv, result{failed: true, timeout: true, errType: "Sandbox.Timedout", payload: errorJSON("Sandbox.Timedout", msg)})
}

// pending returns the event the function holds if its id is id.
func (f *function) pending(id string) *invocation {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.current != nil && f.current.id == id {
		return f.current
	}
	return nil
}

// response is POST /runtime/invocation/{id}/response.
func (f *function) response(w http.ResponseWriter, r *http.Request) {
	inv := f.pending(r.PathValue("id"))
	if inv == nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequestID", fmt.Sprintf("no pending event has request id %q", r.PathValue("id")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPayload))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		msg := fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", MaxPayload)
		f.complete(inv, result{failed: true, errType: "Function.ResponseSizeTooLarge", payload: errorJSON("Function.ResponseSizeTooLarge", msg)})
		writeAPIError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", msg)
		return
	case err != nil:
		// The runtime went away mid-answer; its exit ends the event.
		return
	}
	if typ := r.Trailer.Get(headerErrorType); typ != "" {
		// A streamed answer that failed part way (aws-lambda-go's trailers).
		eb, _ := base64.StdEncoding.DecodeString(r.Trailer.Get(trailerErrorBody))
		f.complete(inv, result{failed: true, errType: typ, payload: normalizeError(typ, eb)})
	} else {
		f.complete(inv, result{payload: body})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
}

// invocationError is POST /runtime/invocation/{id}/error.
func (f *function) invocationError(w http.ResponseWriter, r *http.Request) {
	inv := f.pending(r.PathValue("id"))
	if inv == nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequestID", fmt.Sprintf("no pending event has request id %q", r.PathValue("id")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPayload))
	if err != nil && !errors.As(err, new(*http.MaxBytesError)) {
		return
	}
	typ := r.Header.Get(headerErrorType)
	payload := normalizeError(typ, body)
	var eb ErrorBody
	json.Unmarshal(payload, &eb)
	f.complete(inv, result{failed: true, errType: eb.Type, payload: payload})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
}

// initError is POST /runtime/init/error: the function cannot start. The
// start fails with its message, and the instance is stopped.
func (f *function) initError(w http.ResponseWriter, r *http.Request) {
	select {
	case <-f.ready:
		writeAPIError(w, http.StatusForbidden, "InvalidStateTransition", "the function is initialized already (it asked for an event)")
		return
	default:
	}
	body, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	var eb ErrorBody
	json.Unmarshal(normalizeError(r.Header.Get(headerErrorType), body), &eb)
	f.mu.Lock()
	f.initErr = &eb
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
	f.stop(fmt.Sprintf("the function failed to initialize: %s: %s", eb.Type, eb.Message))
}

// normalizeError makes a function's error report Lambda's error JSON: an
// object with errorMessage and errorType (a runtime may post any text).
func normalizeError(typ string, body []byte) []byte {
	var eb ErrorBody
	if json.Unmarshal(body, &eb) == nil && (eb.Message != "" || eb.Type != "") {
		if eb.Type == "" {
			eb.Type = typ
		}
		if eb.Type == "" {
			eb.Type = "Unhandled"
		}
		b, _ := json.Marshal(eb)
		return b
	}
	if typ == "" {
		typ = "Unhandled"
	}
	return errorJSON(typ, string(body))
}

// writeAPIError answers the Runtime API's error shape.
func writeAPIError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(errorJSON(typ, msg))
}

// ingress serves the instance's address: the readiness path, raw
// invocations (InvokeHeader) and HTTP requests, which become API Gateway
// events.
func (f *function) ingress(w http.ResponseWriter, r *http.Request) {
	raw := subtle.ConstantTimeCompare([]byte(r.Header.Get(InvokeHeader)), []byte(invokeToken)) == 1
	if !raw && r.URL.Path == ReadyPath && r.Method == http.MethodGet {
		f.readiness(w)
		return
	}
	// One event at a time: wait for the slot before reading the body, so
	// that a request that reaches an instance being stopped is cut without
	// an answer and unread, which the gateway sends to another instance.
	ctx := r.Context()
	select {
	case f.slot <- struct{}{}:
	case <-ctx.Done():
		return
	case <-f.stopping:
		panic(http.ErrAbortHandler)
	case <-f.dead:
		panic(http.ErrAbortHandler)
	}
	select {
	case <-f.stopping:
		<-f.slot
		panic(http.ErrAbortHandler)
	default:
	}
	held := true
	defer func() {
		if held {
			<-f.slot
		}
	}()
	at := time.Now()
	id := NewRequestID()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPayload))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			f.refuse(w, raw, http.StatusRequestEntityTooLarge, "RequestTooLargeException",
				fmt.Sprintf("the request is larger than Lambda's limit of %d bytes for a synchronous invocation", MaxPayload))
		}
		return
	}
	payload := body
	if !raw {
		if payload, err = event(f.shape, readEventRequest(r, body, id, at)); err != nil {
			f.refuse(w, raw, http.StatusInternalServerError, "ServiceException", "encoding the event: "+err.Error())
			return
		}
		if len(payload) > MaxPayload {
			f.refuse(w, raw, http.StatusRequestEntityTooLarge, "RequestTooLargeException",
				fmt.Sprintf("the request's event (%d bytes, the body base64-encoded when binary) is larger than Lambda's limit of %d bytes", len(payload), MaxPayload))
			return
		}
	}
	inv := &invocation{id: id, payload: payload, deadline: at.Add(f.timeout), traceID: traceID(at),
		done: make(chan result, 1)}
	if cc := r.Header.Get(HeaderClientContextIn); cc != "" && raw {
		if b, err := base64.StdEncoding.DecodeString(cc); err == nil {
			inv.clientContext = string(b)
		}
	}
	select {
	case f.events <- inv:
		held = false // the slot is the event's now: complete frees it
	case <-ctx.Done():
		return
	case <-f.stopping:
		f.answerDead(w, raw, id)
		return
	case <-f.dead:
		f.answerDead(w, raw, id)
		return
	}
	var res result
	select {
	case res = <-inv.done:
	case <-ctx.Done():
		return // the event runs on; the slot frees when it ends
	case <-f.dead:
		// Ended as the event was handed over, before exited could see it
		// (an event exited did see is completed already: this does nothing).
		f.mu.Lock()
		overrun := f.overrun == inv
		f.mu.Unlock()
		if !overrun {
			f.complete(inv, result{failed: true, errType: "Runtime.ExitError",
				payload: errorJSON("Runtime.ExitError", fmt.Sprintf("RequestId: %s Error: Runtime exited: %s", inv.id, f.exitWhy()))})
		}
		res = <-inv.done
	}
	if raw {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set(HeaderAmznRequestID, id)
		if res.failed {
			h.Set(HeaderFunctionError, "Unhandled")
		}
		h.Set("Content-Length", strconv.Itoa(len(res.payload)))
		w.WriteHeader(http.StatusOK)
		w.Write(res.payload)
		return
	}
	if res.failed {
		status := http.StatusBadGateway
		if res.timeout {
			status = http.StatusGatewayTimeout
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set(HeaderFunctionError, "Unhandled")
		h.Set(HeaderAmznRequestID, id)
		h.Set("Content-Length", strconv.Itoa(len(res.payload)))
		w.WriteHeader(status)
		w.Write(res.payload)
		return
	}
	a, err := answer(f.shape, res.payload)
	if err != nil {
		f.refuse(w, false, http.StatusBadGateway, "Function.InvalidProxyResponse", err.Error())
		return
	}
	if len(a.body) > 0 && a.header.Get("Content-Type") == "" {
		a.header.Set("Content-Type", "application/json")
	}
	a.write(w)
}

// readiness answers the controller's probe.
func (f *function) readiness(w http.ResponseWriter) {
	select {
	case <-f.dead:
		http.Error(w, "the function has ended", http.StatusServiceUnavailable)
	case <-f.ready:
		io.WriteString(w, "ready\n")
	default:
		http.Error(w, "the function has not asked for an event yet", http.StatusServiceUnavailable)
	}
}

// answerDead answers a request that reached an instance that has ended.
func (f *function) answerDead(w http.ResponseWriter, raw bool, id string) {
	f.mu.Lock()
	msg := fmt.Sprintf("RequestId: %s Error: Runtime exited: %s", id, f.why)
	if f.why == "" {
		msg = fmt.Sprintf("RequestId: %s Error: the instance is being stopped: %s", id, f.reason)
	}
	f.mu.Unlock()
	if raw {
		w.Header().Set(HeaderFunctionError, "Unhandled")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write(errorJSON("Runtime.ExitError", msg))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadGateway)
	w.Write(errorJSON("Runtime.ExitError", msg))
}

// refuse answers a request that did not reach the function: in the
// Invoke API's error shape for a raw invocation, API Gateway's otherwise.
func (f *function) refuse(w http.ResponseWriter, raw bool, status int, typ, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if status == http.StatusRequestEntityTooLarge {
		h.Set("Connection", "close")
	}
	if raw {
		h.Set("X-Amzn-ErrorType", typ)
		kind := "User"
		if status >= 500 {
			kind = "Service"
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(struct{ Type, Message string }{kind, msg})
		return
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Message string `json:"message"`
	}{msg})
}

// NewRequestID returns a random UUID (version 4), as Lambda's request ids.
func NewRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// traceID returns an X-Ray trace header (Root=1-<time>-<random>).
func traceID(at time.Time) string {
	var b [20]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0", at.Unix(), h[:24], h[24:40])
}
