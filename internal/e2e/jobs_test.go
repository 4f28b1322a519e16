package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/jobs"
	"tandem/internal/testbin"
)

// jobsWorker is the function the jobs run: it appends "JOB-ID PATH" to
// $SEEN for every request it gets (so the test counts duplicates), takes
// a moment, and answers 200, or 500 on /fail.
const jobsWorker = `
import os, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
seen = os.environ["SEEN"]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(200, b"ok")
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        fd = os.open(seen, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, ("%s %s\n" % (self.headers.get("X-Tandem-Job-Id", "-"), self.path)).encode())
        os.close(fd)
        time.sleep(0.1)
        if self.path.startswith("/fail"):
            self.answer(500, b'{"error": "this function always fails"}')
        else:
            self.answer(200, b'{"echo": ' + body + b'}')
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`

// callbacks is the loopback destination server: it keeps every record
// POSTed to it, by job id.
type callbacks struct {
	mu   sync.Mutex
	byID map[string][]jobs.Job
}

func (c *callbacks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var j jobs.Job
	if err := json.NewDecoder(r.Body).Decode(&j); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	c.mu.Lock()
	c.byID[j.ID] = append(c.byID[j.ID], j)
	c.mu.Unlock()
}

// TestJobs_SurviveKill9: 200 jobs are accepted with 202; tandem is killed
// with SIGKILL while about half are still queued or running; after a
// restart every job reaches success or the dead-letter list, none lost,
// and the function's duplicates are counted. A failing function's jobs
// land in the dead-letter list after their retries, and the destinations
// get each job's record.
func TestJobs_SurviveKill9(t *testing.T) {
	const total, failing = 200, 4
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen.txt")
	if err := os.WriteFile(filepath.Join(dir, "worker.py"), []byte(jobsWorker), 0o644); err != nil {
		t.Fatal(err)
	}
	cb := &callbacks{byID: map[string][]jobs.Job{}}
	dest := httptest.NewServer(cb)
	defer dest.Close()

	srv := startServerArgs(t, []string{"--jobs-backoff", "50ms"})
	srv.deploy(dir, fmt.Sprintf(`name: worker
runtime:
  command: [/usr/bin/python3, worker.py]
  env: {SEEN: %q}
  health: /health
scaling: {min: 1, max: 2, container_concurrency: 2}
async:
  retries: 2
  max_event_age: 10m
  on_success: %s/ok
  on_failure: %s/failed
`, seen, dest.URL, dest.URL))
	srv.waitFor("ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, "worker")

	// Unknown model and oversized body are refused before anything is stored.
	if code, _, _ := asyncPost(t, srv.gateway, "/v1/async/nope/work", "{}"); code != 404 {
		t.Fatalf("a job for an unknown model: %d, want 404", code)
	}
	if code, _, _ := asyncPost(t, srv.gateway, "/models/worker/work", strings.Repeat("x", 7<<20)); code != 413 {
		t.Fatalf("a job over the body limit: %d, want 413", code)
	}

	// 200 jobs from 16 clients at once (bolt commits them in shared
	// batches); the function takes 4 at a time, so most wait.
	ids := make([]string, total)
	fails := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, total)
	began := time.Now()
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 16 {
				path := fmt.Sprintf("/models/worker/work/%d", i) // Prefer: respond-async
				if i%2 == 1 {
					path = fmt.Sprintf("/v1/async/worker/work/%d", i)
				}
				if i < failing {
					path = fmt.Sprintf("/v1/async/worker/fail/%d", i)
				}
				code, id, body := asyncPost(t, srv.gateway, path, fmt.Sprintf(`{"n": %d}`, i))
				var acc struct {
					ID        string `json:"id"`
					StatusURL string `json:"status_url"`
				}
				if err := json.Unmarshal([]byte(body), &acc); code != 202 || id == "" || err != nil || acc.ID != id || !strings.HasSuffix(acc.StatusURL, "/v1/jobs/"+id) {
					errs <- fmt.Errorf("job %d: %d %q (job id %q), want a 202 naming the job and its status URL", i, code, body, id)
					continue
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("200 jobs accepted (202, stored) in %s from 16 clients", time.Since(began).Round(time.Millisecond))
	for i := range failing {
		fails[ids[i]] = true
	}

	// Kill tandem while about half the jobs are still to run.
	deadline := time.Now().Add(60 * time.Second)
	for len(seenIDs(t, seen)) < total/2 {
		if time.Now().After(deadline) {
			t.Fatalf("the function saw only %d jobs in 60s", len(seenIDs(t, seen)))
		}
		time.Sleep(5 * time.Millisecond)
	}
	var queued, running []*jobs.Job
	getJSON(t, "http://"+srv.admin+"/v1/jobs?status=queued&limit=0", &queued)
	getJSON(t, "http://"+srv.admin+"/v1/jobs?status=running&limit=0", &running)
	srv.stop(syscall.SIGKILL)
	t.Logf("killed tandem (SIGKILL) with %d jobs queued and %d running; the function had seen %d of %d",
		len(queued), len(running), len(seenIDs(t, seen)), total)
	if len(queued)+len(running) < total/4 {
		t.Fatalf("only %d jobs were pending at the kill: the test did not test a crash with work in flight", len(queued)+len(running))
	}

	srv.start()
	final := map[string]*jobs.Job{}
	deadline = time.Now().Add(120 * time.Second)
	for len(final) < total {
		var list []*jobs.Job
		getJSON(t, "http://"+srv.admin+"/v1/jobs?limit=0", &list)
		clear(final)
		for _, j := range list {
			if j.Status.Final() && !strings.HasPrefix(j.Destination, "pending") {
				final[j.ID] = j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs finished in 120s after the restart", len(final), total)
		}
		time.Sleep(50 * time.Millisecond)
	}

	counts := seenIDs(t, seen)
	dups := 0
	for _, id := range ids {
		j := final[id]
		if j == nil {
			t.Fatalf("job %s lost", id)
		}
		want := jobs.Succeeded
		if fails[id] {
			want = jobs.Failed
		}
		if j.Status != want {
			t.Errorf("job %s (%s) is %s after %d attempts (%s), want %s", id, j.Request.Path, j.Status, j.Attempts, j.Reason, want)
		}
		if counts[id] == 0 {
			t.Errorf("the function never saw job %s", id)
		}
		if !fails[id] && counts[id] > 1 {
			dups += counts[id] - 1
		}
	}
	t.Logf("after the restart: %d jobs succeeded, %d in the dead-letter list; the function saw %d duplicate deliveries of successful jobs (at-least-once)",
		total-failing, failing, dups)

	// The dead-letter list: the failing jobs, after their 2 retries.
	out, err := srv.tandem("jobs", "ls", "--failed", "-o", "json")
	if err != nil {
		t.Fatalf("tandem jobs ls --failed: %v\n%s", err, out)
	}
	var dead []*jobs.Job
	if err := json.Unmarshal([]byte(out), &dead); err != nil {
		t.Fatalf("jobs ls --failed -o json: %v\n%s", err, out)
	}
	if len(dead) != failing {
		t.Fatalf("dead-letter list has %d jobs, want %d:\n%s", len(dead), failing, out)
	}
	for _, j := range dead {
		if !fails[j.ID] || j.Attempts < 3 || j.Result == nil || j.Result.Status != 500 {
			t.Errorf("dead letter %s: %d attempts, result %+v", j.ID, j.Attempts, j.Result)
		}
	}
	if out, err := srv.tandem("jobs", "get", ids[0]); err != nil || !regexp.MustCompile(`status:\s+failed`).MatchString(out) {
		t.Errorf("tandem jobs get %s: %v\n%s", ids[0], err, out)
	}

	// The gateway's status route shows a job and its result.
	var j jobs.Job
	getJSON(t, "http://"+srv.gateway+"/v1/jobs/"+ids[total-1], &j)
	if j.Status != jobs.Succeeded || j.Result == nil || !strings.Contains(j.Result.Body, fmt.Sprintf(`"n": %d`, total-1)) {
		t.Errorf("GET /v1/jobs/%s = %+v", ids[total-1], j)
	}

	// Every job's record reached its destination, with its result.
	cb.mu.Lock()
	defer cb.mu.Unlock()
	for _, id := range ids {
		got := cb.byID[id]
		if len(got) == 0 {
			t.Errorf("no callback for job %s", id)
			continue
		}
		last := got[len(got)-1]
		if want := final[id].Status; last.Status != want || last.Result == nil {
			t.Errorf("callback for job %s: %s with result %+v, want %s", id, last.Status, last.Result, want)
		}
	}
}

// startServerArgs is startServer with extra flags for tandem serve.
func startServerArgs(t *testing.T, args []string) *server {
	t.Helper()
	s := &server{t: t, dataDir: t.TempDir(), extraArgs: args}
	s.bin = testbin.Build(t, "tandem/cmd/tandem")
	s.start()
	t.Cleanup(func() { s.stop(syscall.SIGTERM) })
	return s
}

// asyncPost sends body to path as an asynchronous request and returns the
// status, the X-Tandem-Job-Id header and the body.
func asyncPost(t *testing.T, gateway, path, body string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+gateway+path, strings.NewReader(body))
	req.Header.Set("Prefer", "respond-async")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("POST %s: %v", path, err) // called from several goroutines: no Fatal
		return 0, "", ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(jobs.HeaderJobID), string(b)
}

// seenIDs counts the deliveries of each job id the function recorded.
func seenIDs(t *testing.T, file string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		if id, _, ok := strings.Cut(line, " "); ok {
			n[id]++
		}
	}
	return n
}
