package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/jobs"
	"tandem/internal/testbin"
)

// startJetStream runs `tandem jetstream` with a token on a free loopback
// port and returns its URL and the token's file.
func startJetStream(t *testing.T) (url, tokenFile string) {
	t.Helper()
	dir := t.TempDir()
	tokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("e2e-jetstream-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testbin.Build(t, "tandem/cmd/tandem"), "jetstream", "--listen", "127.0.0.1:0",
		"--store-dir", filepath.Join(dir, "store"), "--token-file", tokenFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`msg="jetstream serving" url=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case url = <-found:
		return url, tokenFile
	case <-time.After(30 * time.Second):
		t.Fatal("tandem jetstream did not serve within 30s")
	}
	return "", ""
}

// TestJobs_SharedQueueSurvivesAReplica: two tandem serve processes share
// one `tandem jetstream` queue; replica A accepts every job and is killed
// with SIGKILL while it runs some; replica B runs every job, A's
// interrupted ones included, once their deliveries time out.
func TestJobs_SharedQueueSurvivesAReplica(t *testing.T) {
	const total = 40
	url, tokenFile := startJetStream(t)
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen.txt")
	if err := os.WriteFile(filepath.Join(dir, "worker.py"), []byte(jobsWorker), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--jobs-nats", url, "--jobs-nats-token-file", tokenFile, "--jobs-backoff", "50ms"}
	a, b := startServerArgs(t, args), startServerArgs(t, args)
	manifest := fmt.Sprintf(`name: worker
runtime:
  command: [/usr/bin/python3, worker.py]
  env: {SEEN: %q}
scaling: {min: 1, max: 1, container_concurrency: 2}
`, seen)
	for _, s := range []*server{a, b} {
		s.deploy(dir, manifest)
		s.waitFor("ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, "worker")
	}
	var ids []string
	for i := range total {
		code, id, body := asyncPost(t, a.gateway, fmt.Sprintf("/v1/async/worker/work/%d", i), fmt.Sprintf(`{"n": %d}`, i))
		if code != 202 {
			t.Fatalf("job %d: %d %s", i, code, body)
		}
		ids = append(ids, id)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(seenIDs(t, seen)) < total/4 {
		if time.Now().After(deadline) {
			t.Fatalf("the functions saw only %d jobs in 60s", len(seenIDs(t, seen)))
		}
		time.Sleep(5 * time.Millisecond)
	}
	var running []*jobs.Job
	getJSON(t, "http://"+b.admin+"/v1/jobs?status=running&limit=0", &running)
	a.stop(syscall.SIGKILL)
	t.Logf("killed replica A (SIGKILL) with %d jobs running on A and B; the functions had seen %d of %d",
		len(running), len(seenIDs(t, seen)), total)

	final := map[string]*jobs.Job{}
	deadline = time.Now().Add(120 * time.Second)
	for len(final) < total {
		var list []*jobs.Job
		getJSON(t, "http://"+b.admin+"/v1/jobs?limit=0", &list)
		clear(final)
		for _, j := range list {
			if j.Status.Final() {
				final[j.ID] = j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs finished within 120s after replica A was lost", len(final), total)
		}
		time.Sleep(100 * time.Millisecond)
	}
	counts := seenIDs(t, seen)
	again, dups := 0, 0
	for _, id := range ids {
		j := final[id]
		if j == nil || j.Status != jobs.Succeeded {
			t.Errorf("job %s: %+v", id, j)
			continue
		}
		if j.Attempts > 1 {
			again++
		}
		dups += counts[id] - 1
	}
	if again == 0 {
		t.Errorf("no job was run again after replica A was lost: A held none, and the test tested nothing")
	}
	t.Logf("all %d jobs succeeded through replica B; %d ran again after A was lost; the functions saw %d duplicate deliveries", total, again, dups)

	// A's instance outlived it: a restart adopts it, and the cleanup's
	// SIGTERM stops it.
	a.start()
}
