// Package process runs instances as local child processes: the backend a
// manifest gets when it names no other.
//
// Each instance is one program started from runtime.command in its own
// process group, with a free loopback port in $PORT and its output written
// straight to a log file (never a pipe, so the program survives a crash of
// tandem and can be adopted by the next tandem process).
//
// Where tandem may write to a cgroup hierarchy (root; v2 at /sys/fs/cgroup,
// v2 beside v1 at /sys/fs/cgroup/unified, or else v1's memory hierarchy),
// each instance also gets a cgroup of its own, memory limit or not, and
// starts inside it on v2. When the instance stops or its program exits,
// everything in that cgroup is killed (cgroup.kill, or every pid of
// cgroup.procs on v1), daemons that left the process group with setsid
// included, and the cgroup is removed. Without one, the process group is
// all that holds the instance; backend.Instance.Containment says which.
//
// # Who owns what
//
//   - Backend.mu guards the map of instances and, per instance, the exited
//     flag, the recorded Exit and the Wait channels. No file or cgroup work
//     happens under it; sending a signal does, so that a signal can never
//     reach a process id that has already been reaped and reused.
//   - One watcher goroutine per instance observes its exit, waiting on a
//     non-blocking pidfd through the runtime's poller: the goroutine parks
//     without an OS thread (200 instances cost a handful of threads, not
//     200). For a child of this process the pidfd turns readable when it is
//     a zombie, before it is reaped (the zombie keeps the pid and the group
//     id from being reused); the watcher marks the instance exited, kills
//     what is left of the group, and only then reaps. An adopted instance
//     (a child of an earlier tandem process) is watched the same way.
//     Without pidfd_open a child is waited for with waitid (a thread each)
//     and an adopted instance by polling /proc. The watcher alone reads the cgroup's OOM
//     counter, removes the cgroup and the state file, and delivers the Exit.
//   - The state file DataDir/instances/<id>.json exists exactly while an
//     instance may be running; Recover trusts it only when the pid is alive
//     with the start time the file recorded.
//
// After Close the watchers of children still reap them but touch nothing
// else: the files and cgroups belong to whichever tandem adopts the
// instances next.
package process
