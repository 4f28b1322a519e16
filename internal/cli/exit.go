package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// Exit codes, as scripts tell them apart: the command was wrong (fix the
// command line) or the command was right and what it asked for failed (the
// server said no, or could not be reached).
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitUsage   = 2
)

// ExitCode is the exit code for an error of the command tree NewRoot
// builds. Errors of a command's run are runtime errors unless it marked them
// with usageErrorf; every error cobra finds before running (an unknown
// command or flag, a bad flag value, a wrong number of arguments, a missing
// required flag) is a usage error.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var u *usageError
	if errors.As(err, &u) {
		return ExitUsage
	}
	var r *runtimeError
	if errors.As(err, &r) {
		return ExitRuntime
	}
	return ExitUsage
}

// usageError is a command line that cannot work, found while running.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf returns a usage error (exit code 2).
func usageErrorf(format string, a ...any) error {
	return &usageError{fmt.Errorf(format, a...)}
}

// runtimeError is an error returned by a command's RunE.
type runtimeError struct{ err error }

func (e *runtimeError) Error() string { return e.err.Error() }
func (e *runtimeError) Unwrap() error { return e.err }

// markRunErrors wraps the RunE of every command under c so that what they
// return counts as a runtime error: what is left unmarked then comes from
// cobra's checks before the run.
func markRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := run(cmd, args)
			var u *usageError
			if err == nil || errors.As(err, &u) {
				return err
			}
			return &runtimeError{err}
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}
