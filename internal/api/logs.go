package api

import (
	"net/http"
	"time"

	"tandem/internal/problem"
)

// maxFollowers bounds the log streams open at once: each holds a
// connection and polls the backend until its reader goes away.
const maxFollowers = 64

// followLogs streams a deployment's logs (GET .../logs?follow=1): the last
// tail lines, then each line as instances write it, flushed as it comes,
// until the client goes away, the deployment is deleted or tandem stops.
func (s *Server) followLogs(w http.ResponseWriter, r *http.Request, name string, tail int) {
	select {
	case s.followers <- struct{}{}:
		defer func() { <-s.followers }()
	default:
		problem.Write(w, problem.New(http.StatusServiceUnavailable, "too_many_followers",
			"too many log streams are open; try again when one has ended"))
		return
	}
	rc := http.NewResponseController(w)
	// A stream outlives any write deadline the listener sets.
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	sw := &startWriter{w: w}
	err := s.c.FollowLogs(r.Context(), name, tail, sw, func() {
		sw.started = true
		_ = rc.Flush()
	})
	if err != nil {
		if !sw.started {
			h.Del("Cache-Control")
			problem.Write(w, err)
			return
		}
		s.log.Warn("logs", "model", name, "err", err)
	}
}

// startWriter records whether the answer has begun, so that an error can
// still be answered as one before it has.
type startWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startWriter) Write(p []byte) (int, error) {
	s.started = true
	return s.w.Write(p)
}
