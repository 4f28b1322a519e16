package api

import (
	"net/http"
	"time"

	"tandem/internal/problem"
)

// maxFollowers bounds the log streams open at once: each holds a
// connection and polls the backend until its reader goes away.
const maxFollowers = 64

// followWriteTimeout bounds each write of a log stream: a reader that
// stops reading without closing is let go after it, rather than holding a
// stream for good.
const followWriteTimeout = time.Minute

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
	// The connection may serve later requests, which set no deadline of
	// their own when the server has no WriteTimeout.
	defer rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	sw := &startWriter{w: w, rc: rc}
	err := s.c.FollowLogs(r.Context(), name, tail, sw, func() {
		sw.started = true
		sw.deadline()
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
// still be answered as one before it has, and gives each write its own
// deadline (a stream outlives any deadline set for a whole answer).
type startWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func (s *startWriter) Write(p []byte) (int, error) {
	s.started = true
	s.deadline()
	return s.w.Write(p)
}

func (s *startWriter) deadline() { _ = s.rc.SetWriteDeadline(time.Now().Add(followWriteTimeout)) }
