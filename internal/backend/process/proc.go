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

// pidWatcher tells when a process that is not our child has exited.
type pidWatcher struct {
	pid       int
	startTime uint64
	pidfd     int // -1 when pidfd_open is unavailable
}

// watchPid opens a pidfd for pid when the kernel has pidfd_open. It fails
// when the process is no longer the one that started at startTime.
func watchPid(pid int, startTime uint64) (*pidWatcher, error) {
	w := &pidWatcher{pid: pid, startTime: startTime, pidfd: -1}
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		w.pidfd = fd
	}
	// Checked after opening: the pidfd now pins this very process.
	if !running(pid, startTime) {
		w.close()
		return nil, fmt.Errorf("process %d is gone", pid)
	}
	return w, nil
}

// exited reports, without blocking, whether the process has ended.
func (w *pidWatcher) exited() bool {
	if w.pidfd >= 0 {
		fds := []unix.PollFd{{Fd: int32(w.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err == nil {
			return n > 0
		}
	}
	return !running(w.pid, w.startTime)
}

// wait blocks until the process has ended (true) or quit is closed (false).
// The pidfd wakes it at once; without one it polls /proc every 50ms.
func (w *pidWatcher) wait(quit <-chan struct{}) bool {
	const procPoll = 50 * time.Millisecond
	for {
		if w.pidfd >= 0 {
			// Bounded, so that quit is noticed.
			fds := []unix.PollFd{{Fd: int32(w.pidfd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 200)
			if err == nil && n > 0 {
				return true
			}
			if err == nil || errors.Is(err, unix.EINTR) {
				select {
				case <-quit:
					return false
				default:
				}
				continue
			}
		}
		if !running(w.pid, w.startTime) {
			return true
		}
		select {
		case <-quit:
			return false
		case <-time.After(procPoll):
		}
	}
}

func (w *pidWatcher) close() {
	if w.pidfd >= 0 {
		unix.Close(w.pidfd)
		w.pidfd = -1
	}
}
