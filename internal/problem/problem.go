// Package problem is the one JSON error shape everything tandem answers
// over HTTP, and the one place that maps errors to HTTP status codes.
package problem

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Source says who said it: tandem's gateway or the model's instance.
const (
	SourceGateway = "gateway"
	SourceModel   = "model"
)

// Error is an error with everything needed to answer it over HTTP.
type Error struct {
	Status int `json:"-"`
	// Code is a short machine-readable reason, such as "queue_full".
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the offending input field, if any (for example
	// "inputs[0].shape" or "scaling.max").
	Field  string `json:"field,omitempty"`
	Source string `json:"source"`
	// Details carries structured extras, such as expected vs received shapes.
	Details any `json:"details,omitempty"`
	// RetryAfter, when positive, is sent as a Retry-After header.
	RetryAfter time.Duration `json:"-"`
	// Header holds more headers the answer carries (such as
	// X-Tandem-Cold-Start-Estimate); every protocol's error writer sends
	// them.
	Header http.Header `json:"-"`
	err    error
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// Unwrap returns the error this one was made from, if any.
func (e *Error) Unwrap() error { return e.err }

// New makes a gateway error.
func New(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg, Source: SourceGateway}
}

// Wrap makes a gateway error that unwraps to err.
func Wrap(err error, status int, code string) *Error {
	return &Error{Status: status, Code: code, Message: err.Error(), Source: SourceGateway, err: err}
}

// WithField sets Field and returns e.
func (e *Error) WithField(f string) *Error { e.Field = f; return e }

type mapping struct {
	target error
	status int
	code   string
	retry  time.Duration
}

var mappings []mapping

// Register maps a sentinel error (matched with errors.Is) to a status and
// code. Packages call it from init for the sentinels they own.
func Register(target error, status int, code string, retryAfter time.Duration) {
	mappings = append(mappings, mapping{target, status, code, retryAfter})
}

// From turns any error into an *Error: an *Error in the chain wins, then
// registered sentinels, then 500.
func From(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	for _, m := range mappings {
		if errors.Is(err, m.target) {
			e := Wrap(err, m.status, m.code)
			e.RetryAfter = m.retry
			return e
		}
	}
	return Wrap(err, http.StatusInternalServerError, "internal")
}

// Write answers err as JSON: {"error": {...}}.
func Write(w http.ResponseWriter, err error) {
	e := From(err)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	e.WriteHeader(h)
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(struct {
		Error *Error `json:"error"`
	}{e})
}

// WriteHeader copies e.Header into h.
func (e *Error) WriteHeader(h http.Header) {
	for k, vs := range e.Header {
		h[k] = vs
	}
}
