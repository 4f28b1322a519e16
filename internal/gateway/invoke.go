package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"tandem/internal/lambda"
	"tandem/internal/pool"
	"tandem/internal/problem"
)

// ProtocolLambda is the Lambda Invoke API door:
// POST /2015-03-31/functions/{function}/invocations.
const ProtocolLambda Protocol = "lambda"

// invokeBodyTimeout bounds reading an invocation's event, which happens
// before the instance is acquired.
const invokeBodyTimeout = 30 * time.Second

// AsyncSubmitter takes asynchronous invocations (X-Amz-Invocation-Type:
// Event) once the gateway has admitted them. Submit stores the request
// durably (its body is in memory: r.Body can be read, and r.GetBody gives
// it again) and returns the job's id; it must not wait for the function.
// It is called concurrently.
type AsyncSubmitter interface {
	Submit(ctx context.Context, model string, r *http.Request) (jobID string, err error)
}

// InvokeConfig configures the Invoke API door.
type InvokeConfig struct {
	// Region names functions in ARNs; default "us-east-1".
	Region string
	// Async takes Event invocations; nil answers them 501.
	Async AsyncSubmitter
}

// HeaderJobID names an asynchronous invocation's job.
const HeaderJobID = "X-Tandem-Job-Id"

// MountInvoke mounts the Lambda Invoke API: a function deployment
// (runtime.lambda) is invoked by name, ARN or name:$LATEST, through the
// pipeline as protocol "lambda". RequestResponse sends the body, the raw
// event, to an instance and answers its raw result (a function error is a
// 200 with X-Amz-Function-Error: Unhandled); DryRun answers 204 once the
// function is found and the caller admitted; Event hands the request to
// cfg.Async. Errors take Lambda's shape ({"Type","Message"} and
// X-Amzn-ErrorType). Call it before the gateway serves.
func (g *Gateway) MountInvoke(cfg InvokeConfig) {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	iv := &invoker{g: g, cfg: cfg}
	g.mux.HandleFunc("/2015-03-31/functions/{function}/invocations", iv.serve)
}

type invoker struct {
	g   *Gateway
	cfg InvokeConfig
}

// errNotServed finishes an exchange that no instance took.
var errNotServed = errors.New("not sent to an instance")

func (iv *invoker) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(lambda.HeaderAmznRequestID, requestID())
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeInvokeError(w, problem.New(http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("the Invoke API takes POST, not %s", r.Method)))
		return
	}
	name, qualifier := parseFunction(r.PathValue("function"))
	if q := r.URL.Query().Get("Qualifier"); q != "" {
		qualifier = q
	}
	arn := lambda.ARN(iv.cfg.Region, name)
	d, ok := iv.g.models.Lookup(name)
	if !ok || d.Manifest().Runtime.Lambda == nil {
		why := "no deployment has this name"
		if ok {
			why = "deployment " + name + " is not a function (runtime.lambda)"
		}
		writeInvokeError(w, problem.New(http.StatusNotFound, "ResourceNotFoundException",
			fmt.Sprintf("Function not found: %s (%s)", arn, why)))
		return
	}
	if qualifier != "" && qualifier != "$LATEST" {
		writeInvokeError(w, problem.New(http.StatusNotFound, "ResourceNotFoundException",
			fmt.Sprintf("Function not found: %s:%s (tandem runs $LATEST only: it keeps no versions or aliases)", arn, qualifier)))
		return
	}
	kind := r.Header.Get("X-Amz-Invocation-Type")
	switch kind {
	case "", "RequestResponse", "Event", "DryRun":
	default:
		writeInvokeError(w, problem.New(http.StatusBadRequest, "InvalidParameterValueException",
			fmt.Sprintf("X-Amz-Invocation-Type %q is not RequestResponse, Event or DryRun", kind)))
		return
	}
	if cc := r.Header.Get(lambda.HeaderClientContextIn); cc != "" {
		b, err := base64.StdEncoding.DecodeString(cc)
		if err != nil || !json.Valid(b) {
			writeInvokeError(w, problem.New(http.StatusBadRequest, "InvalidRequestContentException",
				"X-Amz-Client-Context must be a base64-encoded JSON object"))
			return
		}
	}
	// Admitted before the event is read: a refused caller sends no 6 MB.
	ex, err := iv.g.Begin(r.Context(), ProtocolLambda, name, r.Header)
	if err != nil {
		w.Header().Set(HeaderColdStart, "false")
		writeInvokeError(w, err)
		return
	}
	body, err := readInvokeBody(w, r)
	if err == nil {
		err = checkEvent(body)
	}
	if err != nil {
		pe := problem.From(err)
		writeInvokeError(w, pe)
		ex.Finish(pe.Status, false, errNotServed)
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}") // as Lambda: an invocation without a payload gets {}
	}
	switch kind {
	case "DryRun":
		w.WriteHeader(http.StatusNoContent)
		ex.Finish(http.StatusNoContent, false, errNotServed)
		return
	case "Event":
		iv.submit(w, r, ex, body)
		return
	}
	iv.invoke(w, r, ex, body)
}

// checkEvent refuses an event that is not JSON, as Lambda does (an empty
// one is {}).
func checkEvent(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 || json.Valid(body) {
		return nil
	}
	msg := "Could not parse request body into json: the payload is not valid JSON"
	var se *json.SyntaxError
	if err := json.Unmarshal(body, new(any)); errors.As(err, &se) {
		msg = fmt.Sprintf("Could not parse request body into json: %v at byte %d", se, se.Offset)
	}
	return problem.New(http.StatusBadRequest, "InvalidRequestContentException", msg)
}

// submit hands an Event invocation to the async submitter.
func (iv *invoker) submit(w http.ResponseWriter, r *http.Request, ex *Exchange, body []byte) {
	if iv.cfg.Async == nil {
		err := problem.New(http.StatusNotImplemented, "UnsupportedInvocationType",
			"asynchronous invocations (X-Amz-Invocation-Type: Event) are not available: this tandem has no async job support; use RequestResponse")
		writeInvokeError(w, err)
		ex.Finish(http.StatusNotImplemented, false, err)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	id, err := iv.cfg.Async.Submit(r.Context(), ex.Model, r)
	if err != nil {
		pe := problem.From(err)
		writeInvokeError(w, pe)
		ex.Finish(pe.Status, false, errNotServed)
		return
	}
	w.Header().Set(HeaderJobID, id)
	writeJSON(w, http.StatusAccepted, struct {
		JobID string `json:"job_id"`
	}{id})
	ex.Finish(http.StatusAccepted, false, errNotServed)
}

// invoke sends a RequestResponse invocation to an instance.
func (iv *invoker) invoke(w http.ResponseWriter, r *http.Request, ex *Exchange, body []byte) {
	d := ex.Deployment
	sw := &statusWriter{ResponseWriter: w}
	lease, err := acquire(r.Context(), d.Pool)
	if err != nil {
		sw.Header().Set(HeaderColdStart, "false")
		writeInvokeError(sw, err)
		ex.Finish(sw.code(), false, err)
		return
	}
	defer lease.Release()
	defer func() { ex.Finish(sw.code(), lease.ColdStart, nil) }()
	if lease.ColdStart {
		d.Metrics.ColdWait.Observe(lease.Waited.Seconds())
	}
	sw.Header().Set(HeaderColdStart, strconv.FormatBool(lease.ColdStart))
	sw.Header().Set("X-Amz-Executed-Version", "$LATEST")
	// The ingress takes the body as the event, not as an HTTP request to
	// turn into one. The token is this process's: a client's copy of the
	// header is overwritten here, and one sent through /models/ is wrong.
	r.Header.Set(lambda.InvokeHeader, lambda.InvokeToken())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Del("Accept-Encoding")
	rctx, cancel := context.WithTimeout(r.Context(), ex.Timeout())
	defer cancel()
	iv.g.forward(rctx, sw, r, Route{Lease: lease, Model: ex.Model, Path: "/", Reacquire: d.Pool.AcquireExcept,
		Retried: d.Metrics.Retries.Inc, WriteError: writeInvokeError})
}

// parseFunction reads the {function} of an invocation: a name, name:qualifier,
// a function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER])
// or a partial one (ACCOUNT:function:NAME).
func parseFunction(s string) (name, qualifier string) {
	if i := strings.Index(s, ":function:"); i >= 0 {
		s = s[i+len(":function:"):]
	}
	name, qualifier, _ = strings.Cut(s, ":")
	return name, qualifier
}

// readInvokeBody reads an invocation's event, at most lambda.MaxPayload
// bytes (Lambda's limit), else RequestTooLargeException.
func readInvokeBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readBody(w, r, lambda.MaxPayload, invokeBodyTimeout, problem.New(http.StatusRequestEntityTooLarge, "RequestTooLargeException",
		fmt.Sprintf("Request must be smaller than %d bytes for the InvokeFunction operation", lambda.MaxPayload)))
}

// writeInvokeError answers err as the Invoke API does: a function that
// ran out of time or died is the function's error (200 with
// X-Amz-Function-Error: Unhandled and Lambda's error JSON); anything else
// is the service's, {"Type","Message"} with the exception's name in
// X-Amzn-ErrorType. The status and Retry-After are those of problem.Write.
func writeInvokeError(w http.ResponseWriter, err error) {
	e := problem.From(err)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	switch e.Code {
	case pool.CodeRequestTimeout, pool.CodeInstanceDied, pool.CodeInstanceOOM:
		typ := "Runtime.ExitError"
		if e.Code == pool.CodeRequestTimeout {
			typ = "Sandbox.Timedout"
		}
		h.Set(lambda.HeaderFunctionError, "Unhandled")
		writeJSON(w, http.StatusOK, lambda.ErrorBody{Type: typ, Message: e.Message})
		return
	}
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	typ := invokeErrorType(e)
	h.Set("X-Amzn-ErrorType", typ)
	kind := "User"
	if e.Status >= 500 {
		kind = "Service"
	}
	writeJSON(w, e.Status, struct {
		Type    string `json:"Type"`
		Message string `json:"Message"`
	}{kind, e.Message})
}

// invokeErrorType names the Lambda exception of a problem: its own code
// when the door set one, else one by status.
func invokeErrorType(e *problem.Error) string {
	if strings.HasSuffix(e.Code, "Exception") || e.Code == "UnsupportedInvocationType" {
		return e.Code
	}
	switch e.Status {
	case http.StatusBadRequest:
		return "InvalidRequestContentException"
	case http.StatusUnauthorized:
		return "UnrecognizedClientException"
	case http.StatusForbidden:
		return "AccessDeniedException"
	case http.StatusNotFound:
		return "ResourceNotFoundException"
	case http.StatusRequestEntityTooLarge:
		return "RequestTooLargeException"
	case http.StatusTooManyRequests:
		return "TooManyRequestsException"
	case http.StatusBadGateway:
		return "ResourceNotReadyException"
	case http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "TooManyRequestsException"
	default:
		if e.Status >= 500 {
			return "ServiceException"
		}
		return "InvalidParameterValueException"
	}
}

// requestID is a fresh Lambda request id for an Invoke API answer.
func requestID() string { return lambda.NewRequestID() }
