package process_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/process"
	"tandem/internal/testbin"
)

// daemonCommand runs bin after starting a daemon that leaves the process
// group (setsid) and writes its pid to pidFile.
func daemonCommand(bin, pidFile string) []string {
	return []string{"sh", "-c", "setsid sh -c 'echo $$ > " + pidFile + "; exec sleep 1000' & exec " + bin}
}

// daemonPid waits (bounded) for the daemon to write its pid, and kills it
// when the test ends whatever happened.
func daemonPid(t *testing.T, pidFile string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(pidFile)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 1 {
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never wrote %s", pidFile)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// waitGone waits (bounded) until pid is no live process.
func waitGone(pid int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// requireCgroup skips when the instance is held by its process group only,
// which a setsid daemon escapes; as root in CI that is a failure.
func requireCgroup(t *testing.T, inst backend.Instance) {
	t.Helper()
	if inst.Containment == process.ContainCgroup {
		return
	}
	if os.Geteuid() == 0 && os.Getenv("CI") == "true" {
		t.Fatalf("running as root in CI, but the instance's containment is %q", inst.Containment)
	}
	t.Skipf("containment here is %q: a setsid daemon escapes it", inst.Containment)
}

// TestBackend_StopKillsDaemon checks that stopping an instance ends a
// daemon it started in a session of its own, and that its cgroup goes.
func TestBackend_StopKillsDaemon(t *testing.T) {
	bin := fakemodel(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "daemon.pid")
	b := newBackend(t, dir)
	m := testManifest(t, "daemon", daemonCommand(bin, pidFile), nil, 0)
	inst, err := b.Start(context.Background(), spec(m, "daemon-1"))
	if err != nil {
		t.Fatal(err)
	}
	pid := daemonPid(t, pidFile)
	if inst.Containment != process.ContainCgroup && inst.Containment != process.ContainProcessGroup {
		t.Fatalf("Containment = %q, want cgroup or process-group", inst.Containment)
	}
	requireCgroup(t, inst)
	cg := cgroupOf(pid)
	testbin.WaitHealthy(t, inst.Addr)
	stop(t, b, inst.ID)
	if !waitGone(pid) {
		t.Fatalf("daemon %d outlived Stop", pid)
	}
	if cg != "" {
		if _, err := os.Stat(cg); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left after Stop: %v", cg, err)
		}
	}
}

// cgroupOf returns the directory of pid's tandem cgroup, or "".
func cgroupOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-id:controllers:path; "0::" is the v2 hierarchy.
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && parts[0] == "0" && strings.HasPrefix(parts[2], "/tandem/") {
			for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
				if _, err := os.Stat(filepath.Join(root, parts[2], "cgroup.procs")); err == nil {
					return filepath.Join(root, parts[2])
				}
			}
		}
	}
	return ""
}

// TestBackend_AdoptedKeepsCgroup checks that an instance adopted after a
// crash of tandem is still contained: stopping it ends its daemon.
func TestBackend_AdoptedKeepsCgroup(t *testing.T) {
	bin := fakemodel(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "daemon.pid")
	m := testManifest(t, "adopt", daemonCommand(bin, pidFile), nil, 0)
	sp := spec(m, "adopt-1")
	in, _ := json.Marshal(sp)

	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"="+dir)
	helper.Stdin = bytes.NewReader(in)
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	var inst backend.Instance
	err = json.NewDecoder(bufio.NewReader(out)).Decode(&inst)
	helper.Process.Kill() // tandem crashes
	helper.Wait()
	if err != nil {
		t.Fatalf("helper printed no instance: %v", err)
	}
	pid := daemonPid(t, pidFile)
	testbin.WaitHealthy(t, inst.Addr)

	b := newBackend(t, dir)
	got, err := b.Recover(context.Background())
	if err != nil || len(got) != 1 {
		t.Fatalf("Recover = %+v, %v; want one instance", got, err)
	}
	if got[0].Containment != inst.Containment {
		t.Errorf("adopted Containment = %q, want %q as started", got[0].Containment, inst.Containment)
	}
	requireCgroup(t, got[0])
	stop(t, b, sp.ID)
	if !waitGone(pid) {
		t.Fatalf("daemon %d of an adopted instance outlived Stop", pid)
	}
}

// threads returns this process's OS thread count.
func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// TestBackend_NoThreadPerInstance checks that waiting on many instances
// parks goroutines, not OS threads.
func TestBackend_NoThreadPerInstance(t *testing.T) {
	const n = 200
	dir := t.TempDir()
	// A copy of sleep of our own, so that its processes are ours to count.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, "tandem-test-sleep")
	if err := os.WriteFile(prog, data, 0o755); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, dir)
	m := testManifest(t, "many", []string{prog, "1000"}, nil, 0)
	ids := make([]string, n)
	t.Cleanup(func() {
		for _, pid := range processesOf(prog) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	for i := range ids {
		ids[i] = fmt.Sprintf("many-%d", i)
		if _, err := b.Start(context.Background(), spec(m, ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(processesOf(prog)); got != n {
		t.Errorf("%d processes running, want %d", got, n)
	}
	if th := threads(t); th >= 60 {
		t.Errorf("%d OS threads while waiting on %d instances, want far fewer (< 60)", th, n)
	} else {
		t.Logf("%d OS threads while waiting on %d instances", th, n)
	}

	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := b.Stop(ctx, id, 5*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for len(processesOf(prog)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if left := processesOf(prog); len(left) > 0 {
		t.Errorf("%d processes left after Stop", len(left))
	}
	if list, _ := b.List(context.Background()); len(list) > 0 {
		t.Errorf("List after Stop = %d instances, want none", len(list))
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "instances")); len(entries) > 0 {
		t.Errorf("%d state files left after Stop", len(entries))
	}
}
