package docker

import (
	"time"

	"syscall"

	"github.com/moby/moby/api/types/container"

	"tandem/internal/backend"
)

// exitOf says how a container ended from its state after it stopped. The
// engine reports a process killed by signal N as exit code 128+N (as a shell
// does), so such codes are reported as that signal, named as the process
// backend names it (syscall.Signal's String: "terminated", "killed"); the
// kernel's OOM killer sends SIGKILL, and the engine marks it OOMKilled.
func exitOf(st container.State, at time.Time) backend.Exit {
	e := backend.Exit{Code: st.ExitCode, At: at}
	if t, err := time.Parse(time.RFC3339Nano, st.FinishedAt); err == nil && !t.IsZero() && t.Year() > 1 {
		e.At = t
	}
	if sig := st.ExitCode - 128; sig > 0 && sig < 65 {
		e.Code, e.Signal = -1, syscall.Signal(sig).String()
	}
	if st.OOMKilled {
		e.OOM = true
		e.Code, e.Signal = -1, syscall.SIGKILL.String()
	}
	return e
}
