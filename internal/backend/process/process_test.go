package process_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/backendtest"
	"tandem/internal/backend/process"
	"tandem/internal/manifest"
	"tandem/internal/testbin"
)

// helperEnv makes the test binary act as a short-lived tandem that starts
// one instance and is then killed (see TestBackend_RecoverAfterCrash).
const helperEnv = "TANDEM_PROCESS_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		crashHelper()
		return
	}
	os.Exit(m.Run())
}

// crashHelper starts the instance described on stdin, prints it, and waits
// to be killed.
func crashHelper() {
	var spec backend.Spec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	b, err := process.New(process.Config{DataDir: os.Getenv(helperEnv)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	inst, err := b.Start(context.Background(), spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(inst)
	select {}
}

func fakemodel(t *testing.T) string {
	t.Helper()
	return testbin.Build(t, "tandem/cmd/fakemodel")
}

func newBackend(t *testing.T, dir string) *process.Backend {
	t.Helper()
	b, err := process.New(process.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func testManifest(t *testing.T, name string, command []string, env map[string]string, memory manifest.ByteSize) *manifest.Manifest {
	t.Helper()
	m := &manifest.Manifest{
		Name:      name,
		Runtime:   manifest.Runtime{Command: command, Env: env, Health: "/health"},
		Resources: manifest.Resources{Memory: memory},
	}
	m.SetDefaults()
	if err := m.Validate(); err != nil {
		t.Fatalf("test manifest: %v", err)
	}
	return m
}

// memoryLimitsRequired reports whether the OOM case must run: as root in
// CI it must, and a machine that cannot is a failure there, not a skip.
func memoryLimitsRequired(t *testing.T) bool {
	b := newBackend(t, t.TempDir())
	if !b.LimitsSupported() && os.Geteuid() == 0 && os.Getenv("CI") == "true" {
		t.Errorf("running as root in CI, but the process backend cannot apply memory limits here")
	}
	return b.LimitsSupported()
}

// TestBackend runs the shared behaviour suite against real processes.
func TestBackend(t *testing.T) {
	bin := fakemodel(t)
	backendtest.Run(t, backendtest.Harness{
		New: func(t *testing.T, dir string) backend.Backend { return newBackend(t, dir) },
		Manifest: func(t *testing.T, name string, env map[string]string, memory manifest.ByteSize) *manifest.Manifest {
			return testManifest(t, name, []string{bin}, env, memory)
		},
		SupportsMemoryLimit: memoryLimitsRequired(t),
	})
	deadline := time.Now().Add(10 * time.Second)
	for len(processesOf(bin)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if pids := processesOf(bin); len(pids) > 0 {
		t.Errorf("fake model processes outlived the suite: %v", pids)
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// processesOf returns the live processes running the program at path.
func processesOf(path string) []int {
	var pids []int
	for _, pid := range allPids() {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == path {
			pids = append(pids, pid)
		}
	}
	return pids
}

// groupMembers returns the live (not zombie) processes of group pgid.
func groupMembers(pgid int) []int {
	var pids []int
	for _, pid := range allPids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGroupGone waits (bounded) until no live process is left in group
// pgid and returns those that stayed. A SIGKILLed process takes a moment to
// be gone.
func waitGroupGone(pgid int) []int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := groupMembers(pgid)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func allPids() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// describe writes every field of an Exit (its String method hides some).
func describe(ex backend.Exit) string {
	return fmt.Sprintf("%q (code %d, signal %q, oom %v, err %v)", ex.String(), ex.Code, ex.Signal, ex.OOM, ex.Err)
}

func spec(m *manifest.Manifest, id string) backend.Spec {
	return backend.Spec{ID: id, Deployment: m.Name, Revision: m.Hash(), Manifest: m}
}

func waitExit(t *testing.T, b *process.Backend, id string) backend.Exit {
	t.Helper()
	ch, err := b.Wait(id)
	if err != nil {
		t.Fatalf("Wait(%s): %v", id, err)
	}
	select {
	case ex := <-ch:
		return ex
	case <-time.After(30 * time.Second):
		t.Fatalf("%s never exited", id)
	}
	return backend.Exit{}
}

func stop(t *testing.T, b *process.Backend, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Stop(ctx, id, 5*time.Second); err != nil {
		t.Fatalf("Stop(%s): %v", id, err)
	}
}

// TestBackend_RecoverAfterCrash starts an instance from a separate tandem
// process, kills that process with SIGKILL, and adopts the instance, which
// is then no child of ours: its exit is seen through pidfd or /proc.
func TestBackend_RecoverAfterCrash(t *testing.T) {
	bin := fakemodel(t)
	dir := t.TempDir()
	m := testManifest(t, "crash", []string{"sh", "-c", "sleep 600 & exec " + bin}, nil, 0)
	sp := spec(m, "crash-1")
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
	if err := json.NewDecoder(bufio.NewReader(out)).Decode(&inst); err != nil {
		helper.Process.Kill()
		helper.Wait()
		t.Fatalf("helper printed no instance: %v", err)
	}
	testbin.WaitHealthy(t, inst.Addr)
	helper.Process.Kill() // tandem crashes
	helper.Wait()
	testbin.WaitHealthy(t, inst.Addr) // the instance lives on

	resp, err := http.Get("http://" + inst.Addr + "/pid")
	if err != nil {
		t.Fatal(err)
	}
	pidText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pid, _ := strconv.Atoi(string(pidText))
	if len(groupMembers(pid)) < 2 {
		t.Fatalf("group %d = %v, want the server and its sleep", pid, groupMembers(pid))
	}

	b := newBackend(t, dir)
	got, err := b.Recover(context.Background())
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(got) != 1 || got[0].ID != sp.ID || got[0].Addr != inst.Addr {
		t.Fatalf("Recover = %+v, want %s at %s", got, sp.ID, inst.Addr)
	}
	ch, err := b.Wait(sp.ID)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, b, sp.ID)
	select {
	case ex := <-ch:
		if ex.Code != -1 || ex.Err != nil || ex.OOM {
			t.Errorf("Exit of an adopted instance = %s, want code -1 and no error", describe(ex))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no Exit for the adopted instance")
	}
	if left := waitGroupGone(pid); len(left) > 0 {
		t.Errorf("processes of the instance's group outlived Stop: %v", left)
		for _, p := range left {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "instances", sp.ID+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left after Stop: %v", err)
	}
}

// TestBackend_RecoverForgetsDead checks that state files naming a dead
// process, or a live process with another start time (a reused pid), are
// removed and never adopted.
func TestBackend_RecoverForgetsDead(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pid  int
	}{
		{"dead pid", dead.Process.Pid},
		{"reused pid", os.Getpid()}, // alive, but not started at tick 1
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			b := newBackend(t, dir)
			path := filepath.Join(dir, "instances", "gone.json")
			st := fmt.Sprintf(`{"id":"gone","deployment":"d","addr":"127.0.0.1:1","pid":%d,"start_time":1}`, tt.pid)
			if err := os.WriteFile(path, []byte(st), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := b.Recover(context.Background())
			if err != nil || len(got) != 0 {
				t.Errorf("Recover = %+v, %v; want nothing", got, err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state file kept: %v", err)
			}
		})
	}
}

// TestBackend_Start checks what the child gets (environment, group, state
// file) and that Stop takes the whole group down.
func TestBackend_Start(t *testing.T) {
	bin := fakemodel(t)
	dir := t.TempDir()
	b := newBackend(t, dir)
	m := testManifest(t, "env", []string{"sh", "-c", `echo "env $FROM_MANIFEST $FROM_TANDEM $SHARED $PORT"; sleep 600 & exec "$0"`, bin},
		map[string]string{"FROM_MANIFEST": "m", "SHARED": "manifest"}, 0)
	sp := spec(m, "env-1")
	sp.Env = map[string]string{"FROM_TANDEM": "t", "SHARED": "tandem"}
	inst, err := b.Start(context.Background(), sp)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stop(t, b, sp.ID) })
	if len(inst.Phases) != 1 || inst.Phases[0].Name != "exec" {
		t.Errorf("Phases = %+v, want one exec phase", inst.Phases)
	}
	testbin.WaitHealthy(t, inst.Addr)
	port := inst.Addr[strings.LastIndexByte(inst.Addr, ':')+1:]

	var logs bytes.Buffer
	if err := b.Logs(context.Background(), "env", 0, &logs); err != nil {
		t.Fatal(err)
	}
	if want := "env-1 | env m t tandem " + port + "\n"; !strings.Contains(logs.String(), want) {
		t.Errorf("logs = %q, want a line %q", logs.String(), want)
	}

	data, err := os.ReadFile(filepath.Join(dir, "instances", "env-1.json"))
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	var st struct {
		PID       int    `json:"pid"`
		StartTime uint64 `json:"start_time"`
		Addr      string `json:"addr"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", st.PID))
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if st.Addr != inst.Addr || fields[19] != strconv.FormatUint(st.StartTime, 10) {
		t.Errorf("state %s does not match the process (stat start time %s)", data, fields[19])
	}
	if members := groupMembers(st.PID); len(members) != 2 {
		t.Errorf("group %d = %v, want the server and its sleep", st.PID, members)
	}

	ch, _ := b.Wait(sp.ID)
	stop(t, b, sp.ID)
	if ex := <-ch; ex.Signal != "terminated" {
		t.Errorf("Exit = %s, want terminated", describe(ex))
	}
	if left := waitGroupGone(st.PID); len(left) > 0 {
		t.Errorf("group members outlived Stop: %v", left)
	}
	if _, err := os.Stat(filepath.Join(dir, "instances", "env-1.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left after exit: %v", err)
	}
}

func TestBackend_StartErrors(t *testing.T) {
	b := newBackend(t, t.TempDir())
	tests := []struct {
		name    string
		command []string
		workdir string
		want    string
	}{
		{"missing program", []string{"tandem-no-such-program"}, "", "tandem-no-such-program"},
		{"missing program by path", []string{"/nonexistent/prog"}, "", "/nonexistent/prog"},
		{"missing workdir", []string{"true"}, "/nonexistent/folder", "/nonexistent/folder"},
		{"workdir is a file", []string{"true"}, "/etc/passwd", "/etc/passwd"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testManifest(t, "bad", tt.command, nil, 0)
			m.Runtime.Workdir = tt.workdir
			_, err := b.Start(context.Background(), spec(m, fmt.Sprintf("bad-%d", i)))
			if !errors.Is(err, backend.ErrStartFailed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start error = %v, want ErrStartFailed naming %q", err, tt.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := testManifest(t, "bad", []string{"true"}, nil, 0)
	if _, err := b.Start(ctx, spec(m, "cancelled")); !errors.Is(err, backend.ErrStartFailed) || !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a done context = %v", err)
	}
}

// TestBackend_Logs checks ordering, tails, prefixes and that a deployment
// keeps only its 20 most recent log files.
func TestBackend_Logs(t *testing.T) {
	dir := t.TempDir()
	b := newBackend(t, dir)
	m := testManifest(t, "logs", []string{"sh", "-c", `printf 'one %s\ntwo %s\nthree %s' "$ID" "$ID" "$ID"`}, nil, 0)
	const n = 23
	for i := range n {
		sp := spec(m, fmt.Sprintf("inst-%02d", n-i)) // names sort against start order
		sp.Env = map[string]string{"ID": strconv.Itoa(i)}
		if _, err := b.Start(context.Background(), sp); err != nil {
			t.Fatal(err)
		}
		if ex := waitExit(t, b, sp.ID); ex.Code != 0 {
			t.Fatalf("Exit = %s", describe(ex))
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "logs", "logs", "*.log"))
	if len(files) != 20 {
		t.Errorf("%d log files kept, want 20", len(files))
	}
	var buf bytes.Buffer
	if err := b.Logs(context.Background(), "logs", 2, &buf); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := n - 20; i < n; i++ {
		fmt.Fprintf(&want, "inst-%02d | two %d\ninst-%02d | three %d\n", n-i, i, n-i, i)
	}
	if buf.String() != want.String() {
		t.Errorf("Logs(tail 2) =\n%s\nwant\n%s", buf.String(), want.String())
	}
	if err := b.Logs(context.Background(), "../etc", 0, io.Discard); err == nil {
		t.Error("Logs accepted a deployment name with a path in it")
	}
}

// TestBackend_Close checks that Close leaves instances running and ends
// their Wait channels with ErrClosed.
func TestBackend_Close(t *testing.T) {
	bin := fakemodel(t)
	dir := t.TempDir()
	b1, err := process.New(process.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	m := testManifest(t, "close", []string{bin}, nil, 0)
	inst, err := b1.Start(context.Background(), spec(m, "close-1"))
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := b1.Wait("close-1")
	b1.Close()
	if ex := <-ch; !errors.Is(ex.Err, process.ErrClosed) {
		t.Errorf("Exit after Close = %s, want ErrClosed", describe(ex))
	}
	if _, err := b1.Start(context.Background(), spec(m, "close-2")); !errors.Is(err, process.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	testbin.WaitHealthy(t, inst.Addr)
	b2 := newBackend(t, dir)
	if got, err := b2.Recover(context.Background()); err != nil || len(got) != 1 {
		t.Fatalf("Recover = %+v, %v", got, err)
	}
	stop(t, b2, "close-1")
}

// TestBackend_CrashTakesGroup checks that what a program started in its
// group does not outlive it when it crashes by itself.
func TestBackend_CrashTakesGroup(t *testing.T) {
	bin := fakemodel(t)
	b := newBackend(t, t.TempDir())
	m := testManifest(t, "crashgroup", []string{"sh", "-c", `sleep 600 & exec "$0"`, bin}, nil, 0)
	sp := spec(m, "crashgroup-1")
	inst, err := b.Start(context.Background(), sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, b, sp.ID) })
	testbin.WaitHealthy(t, inst.Addr)
	ch, _ := b.Wait(sp.ID)
	resp, err := http.Get("http://" + inst.Addr + "/pid")
	if err != nil {
		t.Fatal(err)
	}
	pidText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pid, _ := strconv.Atoi(string(pidText))
	if len(groupMembers(pid)) != 2 {
		t.Fatalf("group %d = %v, want the server and its sleep", pid, groupMembers(pid))
	}
	if resp, err := http.Post("http://"+inst.Addr+"/crash", "", nil); err == nil {
		resp.Body.Close()
	}
	if ex := <-ch; ex.Code != 2 {
		t.Errorf("Exit = %s, want code 2", describe(ex))
	}
	if left := waitGroupGone(pid); len(left) > 0 {
		t.Errorf("group members outlived the crash: %v", left)
	}
}

// TestBackend_MemoryLimit checks the cgroup an instance runs in: the limit
// is set, the process is inside, and the cgroup goes away with it.
func TestBackend_MemoryLimit(t *testing.T) {
	if !memoryLimitsRequired(t) {
		t.Skip("SKIPPED: memory limits are not supported here (needs root and a cgroup memory controller)")
	}
	bin := fakemodel(t)
	dir := t.TempDir()
	b := newBackend(t, dir)
	m := testManifest(t, "limited", []string{bin}, nil, 64<<20)
	sp := spec(m, "limited-1")
	inst, err := b.Start(context.Background(), sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, b, sp.ID) })
	testbin.WaitHealthy(t, inst.Addr)
	data, err := os.ReadFile(filepath.Join(dir, "instances", sp.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		PID    int    `json:"pid"`
		Cgroup string `json:"cgroup"`
	}
	json.Unmarshal(data, &st)
	if filepath.Base(st.Cgroup) != sp.ID || filepath.Base(filepath.Dir(st.Cgroup)) != "tandem" {
		t.Fatalf("cgroup %q, want .../tandem/%s", st.Cgroup, sp.ID)
	}
	procs, _ := os.ReadFile(filepath.Join(st.Cgroup, "cgroup.procs"))
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(st.PID)) {
		t.Errorf("cgroup.procs = %q, want pid %d", procs, st.PID)
	}
	limit, err := os.ReadFile(filepath.Join(st.Cgroup, "memory.limit_in_bytes"))
	if err != nil {
		limit, err = os.ReadFile(filepath.Join(st.Cgroup, "memory.max"))
	}
	if err != nil || strings.TrimSpace(string(limit)) != strconv.Itoa(64<<20) {
		t.Errorf("memory limit = %q, %v; want %d", limit, err, 64<<20)
	}
	stop(t, b, sp.ID)
	if _, err := os.Stat(st.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s left after exit: %v", st.Cgroup, err)
	}
}
