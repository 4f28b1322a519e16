package inference

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"tandem/internal/problem"
)

// WriteError answers err on a v2 REST endpoint in the protocol's error
// shape, {"error": "message"}, with the status that package problem maps
// err to (an *problem.Error in the chain, a registered sentinel, a missed
// deadline as 504, else 500) and its Retry-After, if any. The message
// names the field, the code and who said it (gateway or model), since the
// protocol's shape has room for nothing else. Every error tandem raises on
// /v2 (its own, the pipeline's and a model's) goes through here. Nothing
// must have been written to w.
func WriteError(w http.ResponseWriter, err error) {
	noteError(w, err)
	e := problemOf(err)
	b, _ := json.Marshal(errorResponse{Error: errorMessage(e)})
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	e.WriteHeader(h)
	w.WriteHeader(e.Status)
	w.Write(b)
}

// errorResponse is the protocol's error object: $inference_error_response,
// $metadata_model_error_response and $metadata_server_error_response alike.
type errorResponse struct {
	Error string `json:"error"`
}

// errorMessage is the one text of an error for both REST and gRPC:
// "field: message (code, from source)".
func errorMessage(e *problem.Error) string {
	src := e.Source
	if src == "" {
		src = problem.SourceGateway
	}
	return e.Error() + " (" + e.Code + ", from " + src + ")"
}

// problemOf is problem.From, with a deadline that no *problem.Error
// explains (the request's own timeout) answered as 504, as gRPC answers it
// DeadlineExceeded.
func problemOf(err error) *problem.Error {
	var pe *problem.Error
	if !errors.As(err, &pe) && errors.Is(err, context.DeadlineExceeded) {
		return problem.Wrap(err, http.StatusGatewayTimeout, "deadline_exceeded")
	}
	return problem.From(err)
}
