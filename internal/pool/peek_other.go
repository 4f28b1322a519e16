//go:build !unix

package pool

import "syscall"

// peekIdle cannot look without blocking here; a closed connection shows
// when the request fails.
func peekIdle(sc syscall.RawConn) bool { return true }
