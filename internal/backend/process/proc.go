package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procStat is what tandem needs from /proc/<pid>/stat.
type procStat struct {
	// State is the one-letter process state (R, S, D, Z, X, ...).
	State byte
	// PGID is the process group id.
	PGID int
	// StartTime is field 22: clock ticks after boot at which the process
	// started. A pid with another start time is another process.
	StartTime uint64
}

// errBadStat is returned for a stat line that cannot be parsed.
var errBadStat = errors.New("malformed /proc/<pid>/stat")

// parseStat reads one line of /proc/<pid>/stat. The command name (field 2)
// may hold spaces and parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errBadStat
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	// The state is one letter (R, S, D, Z, T, ...).
	if len(f) < 20 || len(f[0]) != 1 || f[0][0] < 'A' || f[0][0] > 'z' {
		return procStat{}, errBadStat
	}
	pgid, err := strconv.Atoi(string(f[5-3]))
	if err != nil {
		return procStat{}, fmt.Errorf("%w: pgrp: %v", errBadStat, err)
	}
	start, err := strconv.ParseUint(string(f[22-3]), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("%w: starttime: %v", errBadStat, err)
	}
	return procStat{State: f[0][0], PGID: pgid, StartTime: start}, nil
}

// readStat reads /proc/<pid>/stat.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// running reports whether pid is a live (not zombie) process that started
// at startTime.
func running(pid int, startTime uint64) bool {
	st, err := readStat(pid)
	if err != nil {
		return false
	}
	return st.StartTime == startTime && st.State != 'Z' && st.State != 'X' && st.State != 'x'
}

// killGroup sends sig to every process of the group pgid. A group that no
// longer exists is not an error.
func killGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return fmt.Errorf("refusing to signal process group %d", pgid)
	}
	err := syscall.Kill(-pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// pidWatcher tells when a process has exited. It waits on a pidfd through
// Go's network poller, so a waiting goroutine parks without holding an OS
// thread: a thousand watched instances cost a thousand goroutines, not a
// thousand threads blocked in waitid or poll.
type pidWatcher struct {
	pid       int
	startTime uint64
	// f wraps a non-blocking pidfd, registered with the runtime poller;
	// nil when pidfd_open is unavailable (then /proc is polled).
	f *os.File
}

// watchPid starts watching pid. It fails when the process is no longer
// the one that started at startTime (for a child that has not been reaped
// yet, it never does).
func watchPid(pid int, startTime uint64) (*pidWatcher, error) {
	w := &pidWatcher{pid: pid, startTime: startTime}
	if fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK); err == nil {
		w.f = os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))
	}
	// Checked after opening: the pidfd now pins this very process. A zombie
	// counts as started: its exit is what the caller waits for.
	if st, err := readStat(pid); err != nil || st.StartTime != startTime {
		w.close()
		return nil, fmt.Errorf("process %d is gone", pid)
	}
	return w, nil
}

// pidfdExited reports, without blocking, whether the pidfd is readable:
// the process has exited (a zombie not reaped yet counts).
func pidfdExited(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// exited reports, without blocking, whether the process has ended.
func (w *pidWatcher) exited() bool {
	if w.f != nil {
		rc, err := w.f.SyscallConn()
		if err == nil {
			var done bool
			if rc.Control(func(fd uintptr) { done = pidfdExited(int(fd)) }) == nil {
				return done
			}
		}
	}
	return !running(w.pid, w.startTime)
}

// wait blocks the calling goroutine until the process has ended (true) or
// quit is closed (false); a nil quit never closes. With a pidfd the
// goroutine is parked in the runtime poller; without one it polls /proc
// every 50ms.
func (w *pidWatcher) wait(quit <-chan struct{}) bool {
	if w.f != nil {
		if ended, ok := w.waitPidfd(quit); ok {
			return ended
		}
	}
	const procPoll = 50 * time.Millisecond
	t := time.NewTicker(procPoll)
	defer t.Stop()
	for {
		if !running(w.pid, w.startTime) {
			return true
		}
		select {
		case <-quit:
			return false
		case <-t.C:
		}
	}
}

// waitPidfd waits for the pidfd to become readable. ok is false when the
// pidfd cannot be waited on (the caller falls back to /proc).
func (w *pidWatcher) waitPidfd(quit <-chan struct{}) (ended, ok bool) {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return false, false
	}
	if quit != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-quit:
				// Wakes the parked Read below with os.ErrDeadlineExceeded.
				_ = w.f.SetReadDeadline(time.Now())
			case <-stop:
			}
		}()
	}
	// Returning false from the callback parks the goroutine until the
	// poller reports the pidfd readable, then calls it again.
	err = rc.Read(func(fd uintptr) bool { return pidfdExited(int(fd)) })
	switch {
	case err == nil:
		return true, true
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, true
	}
	// Not pollable (the runtime could not register it): fall back.
	return false, false
}

func (w *pidWatcher) close() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}
