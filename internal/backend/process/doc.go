// Package process runs instances as local child processes: the backend a
// manifest gets when it names no other.
//
// Each instance is one program started from runtime.command in its own
// process group, with a free loopback port in $PORT and its output written
// straight to a log file (never a pipe, so the program survives a crash of
// tandem and can be adopted by the next tandem process).
//
// # Who owns what
//
//   - Backend.mu guards the map of instances and, per instance, the exited
//     flag, the recorded Exit and the Wait channels. No file or cgroup work
//     happens under it; sending a signal does, so that a signal can never
//     reach a process id that has already been reaped and reused.
//   - One watcher goroutine per instance observes its exit. For a child of
//     this process it waits with WNOWAIT first (the zombie keeps the pid and
//     the group id from being reused), marks the instance exited, kills what
//     is left of the group, and only then reaps. For an adopted instance (a
//     child of an earlier tandem process) it polls a pidfd, or /proc when
//     pidfd_open is missing. The watcher alone reads the cgroup's OOM
//     counter, removes the cgroup and the state file, and delivers the Exit.
//   - The state file DataDir/instances/<id>.json exists exactly while an
//     instance may be running; Recover trusts it only when the pid is alive
//     with the start time the file recorded.
//
// After Close the watchers of children still reap them but touch nothing
// else: the files and cgroups belong to whichever tandem adopts the
// instances next.
package process
