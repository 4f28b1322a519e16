package process

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupVersion says which memory controller tandem drives.
type cgroupVersion int

const (
	cgroupNone cgroupVersion = iota
	cgroupV1                 // /sys/fs/cgroup/memory, memory.limit_in_bytes
	cgroupV2                 // unified hierarchy at /sys/fs/cgroup, memory.max
)

// Containment is how an instance's processes are held together, as
// backend.Instance.Containment reports it.
const (
	// ContainCgroup: the instance has a cgroup of its own; stopping it
	// kills everything in the cgroup, daemons that called setsid included.
	ContainCgroup = "cgroup"
	// ContainProcessGroup: no usable cgroup; stopping it signals its process
	// group, which a program that calls setsid leaves.
	ContainProcessGroup = "process-group"
)

// cgroups places instances in cgroups: one per instance under
// <scopeRoot>/tandem to hold all its processes, and one under <root>/tandem
// for its memory limit (the same directory when both roots are equal).
type cgroups struct {
	version cgroupVersion
	// root is the mount point of the memory hierarchy.
	root string
	// why says why limits are unavailable when version is cgroupNone.
	why string

	// scopeRoot is the hierarchy of containment cgroups; "" when there is
	// none and instances fall back to their process group.
	scopeRoot string
	// scopeV2 is true when scopeRoot is a cgroup v2 hierarchy: processes
	// start inside their cgroup (CLONE_INTO_CGROUP) and cgroup.kill ends
	// them all at once.
	scopeV2 bool
	// scopeWhy says why there is no containment cgroup.
	scopeWhy string
}

const (
	cgroupV1Root = "/sys/fs/cgroup/memory"
	cgroupV2Root = "/sys/fs/cgroup"
	// cgroupHybridRoot is where systemd mounts the v2 hierarchy beside
	// the v1 controllers ("hybrid" mode).
	cgroupHybridRoot = "/sys/fs/cgroup/unified"
	cgroupParent     = "tandem"
)

// detectCgroups finds the cgroups tandem may use. For memory limits, v2 is
// preferred when /sys/fs/cgroup is the unified hierarchy with the memory
// controller; otherwise v1's memory hierarchy. For containment, any v2
// hierarchy (no controller is needed to hold and kill processes), else the
// v1 memory hierarchy. All of it needs root.
func detectCgroups() cgroups {
	if os.Geteuid() != 0 {
		return cgroups{why: "not running as root", scopeWhy: "not running as root"}
	}
	c := detectMemory()
	switch {
	case c.version == cgroupV2:
		c.scopeRoot, c.scopeV2 = c.root, true
	default:
		for _, r := range []string{cgroupV2Root, cgroupHybridRoot} {
			if !isCgroup2(r) {
				continue
			}
			if err := os.MkdirAll(filepath.Join(r, cgroupParent), 0o755); err != nil {
				c.scopeWhy = "cgroup v2 at " + r + ": " + err.Error()
				continue
			}
			c.scopeRoot, c.scopeV2 = r, true
			break
		}
		if c.scopeRoot == "" && c.version == cgroupV1 {
			c.scopeRoot = c.root
		}
		if c.scopeRoot == "" && c.scopeWhy == "" {
			c.scopeWhy = "no writable cgroup hierarchy at " + cgroupV2Root
		}
	}
	return c
}

func detectMemory() cgroups {
	if b, err := os.ReadFile(filepath.Join(cgroupV2Root, "cgroup.controllers")); err == nil &&
		containsWord(string(b), "memory") {
		c := cgroups{version: cgroupV2, root: cgroupV2Root}
		if err := c.prepareV2(); err != nil {
			return cgroups{why: "cgroup v2: " + err.Error()}
		}
		return c
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory.limit_in_bytes")); err == nil {
		c := cgroups{version: cgroupV1, root: cgroupV1Root}
		if err := os.MkdirAll(filepath.Join(c.root, cgroupParent), 0o755); err != nil {
			return cgroups{why: "cgroup v1: " + err.Error()}
		}
		return c
	}
	return cgroups{why: "no cgroup memory controller at " + cgroupV1Root + " or " + cgroupV2Root}
}

// isCgroup2 reports whether dir is the mount point of a cgroup v2 hierarchy.
func isCgroup2(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// prepareV2 creates <root>/tandem and enables the memory controller for its
// children. (The root cgroup may hold processes and delegate at once; a
// non-root cgroup could not, which is why tandem's parent hangs off the root.)
func (c cgroups) prepareV2() error {
	parent := filepath.Join(c.root, cgroupParent)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	for _, dir := range []string{c.root, parent} {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
			return fmt.Errorf("enabling the memory controller in %s: %w", dir, err)
		}
	}
	return nil
}

func (c cgroups) supported() bool { return c.version != cgroupNone }

// createScope makes the containment cgroup of one instance and returns its
// path.
func (c cgroups) createScope(id string) (string, error) {
	if c.scopeRoot == "" {
		return "", errors.New(c.scopeWhy)
	}
	dir := filepath.Join(c.scopeRoot, cgroupParent, id)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	return dir, nil
}

// create makes the cgroup for one instance with a memory limit and returns
// its path.
func (c cgroups) create(id string, limit int64) (string, error) {
	dir := filepath.Join(c.root, cgroupParent, id)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	v := []byte(strconv.FormatInt(limit, 10))
	var err error
	switch c.version {
	case cgroupV1:
		err = os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), v, 0)
		// Without swap accounting the file is absent; with it, swapping
		// would dodge the limit. memsw must be set after the memory limit.
		if err == nil {
			_ = os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), v, 0)
		}
	case cgroupV2:
		err = os.WriteFile(filepath.Join(dir, "memory.max"), v, 0)
		if err == nil {
			_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0)
		}
	default:
		err = errors.New("memory limits are not supported here")
	}
	if err != nil {
		_ = os.Remove(dir)
		return "", fmt.Errorf("setting the memory limit of cgroup %s: %w", dir, err)
	}
	return dir, nil
}

// addProcess moves pid into the cgroup at dir.
func addProcess(dir string, pid int) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// oomKills returns how many processes the kernel's OOM killer ended in the
// cgroup at dir (v1: memory.oom_control, v2: memory.events).
func oomKills(dir string) int {
	for _, name := range []string{"memory.events", "memory.oom_control"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), " ")
			if ok && k == "oom_kill" {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				return n
			}
		}
	}
	return 0
}

// killCgroup sends SIGKILL to every process in the cgroup at dir: at once
// through cgroup.kill (v2, Linux 5.14+), else one pid at a time from
// cgroup.procs, read again until it is empty so that a process forked
// meanwhile is caught too.
func killCgroup(dir string) {
	if dir == "" {
		return
	}
	if os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	for range 100 {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, perr := strconv.Atoi(f); perr == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// removeCgroup kills whatever still runs in the cgroup at dir and removes
// it. rmdir fails while the kernel still counts a dying task, so it retries
// for a short while.
func removeCgroup(dir string) error {
	if dir == "" {
		return nil
	}
	killCgroup(dir)
	var err error
	for range 100 {
		if b, rerr := os.ReadFile(filepath.Join(dir, "cgroup.procs")); rerr == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, perr := strconv.Atoi(f); perr == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		err = os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}
