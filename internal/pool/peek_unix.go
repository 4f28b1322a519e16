//go:build unix

package pool

import "syscall"

// peekIdle reports whether an idle connection is still open with nothing
// to read: one non-blocking MSG_PEEK, which sees the instance's FIN (its
// idle timeout, or its exit) before a request is written into a dead
// connection and has to be failed or retried.
func peekIdle(sc syscall.RawConn) bool {
	var errno error
	var buf [1]byte
	err := sc.Read(func(fd uintptr) bool {
		_, _, errno = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return err == nil && errno == syscall.EAGAIN
}
