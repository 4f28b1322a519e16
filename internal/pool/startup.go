package pool

import (
	"sync"
	"time"

	"tandem/internal/backend"
)

// Startup tells how an instance came to be ready, for the traces of the
// requests that waited for it. The controller fills it in before Add; its
// fields are read only after that.
type Startup struct {
	// Trigger is when the controller decided to start the instance.
	Trigger time.Time
	// Launched is the backend's start time (backend.Instance.StartedAt).
	Launched time.Time
	// Started is when the backend's Start had returned.
	Started time.Time
	// Ready is when the instance passed its readiness probe.
	Ready time.Time
	// Phases are the backend's steps (exec; create and start), in order,
	// each over by Started.
	Phases []backend.Phase

	mu    sync.Mutex
	drawn bool
	note  any
}

// Draw calls draw for the first caller only and returns what it returned
// to every caller, first true for the first. A cold start is shared by the
// requests that waited for it: tracing draws it once, in the trace of the
// first request the instance serves, and links the others to it. draw runs
// under a lock and must not block.
func (s *Startup) Draw(draw func() any) (note any, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.drawn {
		s.drawn, s.note, first = true, draw(), true
	}
	return s.note, first
}
