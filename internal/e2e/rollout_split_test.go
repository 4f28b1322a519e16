package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/testbin"
)

// Helpers shared by the traffic-split tests on Docker and Kubernetes.

var fakeImage struct {
	sync.Mutex
	tag string
}

// fakemodelImage builds the fake model image from this checkout's
// cmd/fakemodel and returns its tag. The tag names the binary's content
// (tandem-fakemodel:src-<sha256>), so a test never runs an image built from
// older source, as tandem-fakemodel:test from scripts/docker.sh can be, and
// a worktree on another branch never replaces this one's image.
func fakemodelImage(t *testing.T) string {
	t.Helper()
	fakeImage.Lock()
	defer fakeImage.Unlock()
	if fakeImage.tag != "" {
		return fakeImage.tag
	}
	root := testbin.RepoRoot(t)
	ctx := t.TempDir()
	// Static, and without paths or VCS stamps: the same source gives the
	// same bytes, so the same tag.
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", filepath.Join(ctx, "fakemodel"), "./cmd/fakemodel")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building a static fakemodel: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(ctx, "fakemodel"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "images", "fakemodel", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write(bin)
	h.Write(dockerfile)
	tag := "tandem-fakemodel:src-" + hex.EncodeToString(h.Sum(nil))[:16]
	if exec.Command("docker", "image", "inspect", tag).Run() != nil {
		writeFile(t, filepath.Join(ctx, "Dockerfile"), string(dockerfile))
		b := exec.Command("docker", "build", "-q", "-t", tag, ctx)
		b.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
		if out, err := b.CombinedOutput(); err != nil {
			t.Fatalf("docker build %s: %v\n%s", tag, err, out)
		}
	}
	fakeImage.tag = tag
	return tag
}

// newRevision returns the one revision of name that is not in known.
func (s *server) newRevision(name string, known ...string) string {
	s.t.Helper()
	var fresh []string
	for _, r := range s.revisions(name) {
		seen := false
		for _, k := range known {
			seen = seen || r.Revision == k
		}
		if !seen {
			fresh = append(fresh, r.Revision)
		}
	}
	if len(fresh) != 1 {
		s.t.Fatalf("new revisions of %s: %v, want one (known %v)", name, fresh, known)
	}
	return fresh[0]
}

// waitRevision polls `tandem revisions` until cond holds for rev.
func (s *server) waitRevision(what, name, rev string, limit time.Duration, cond func(controller.RevisionStatus) bool) {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		revs := s.revisions(name)
		for _, r := range revs {
			if r.Revision == rev && cond(r) {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(revs, "", "  ")
			s.t.Fatalf("%s: not reached within %s; revisions:\n%s", what, limit, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// versions sends n GETs to path, 8 at a time, with the given headers
// (name, value pairs), fails the test for every answer that is not a 200,
// and counts the bodies (the FAKE_VERSION of the revision that answered).
func (s *server) versions(n int, path string, header ...string) map[string]int {
	s.t.Helper()
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		failed []string
		wg     sync.WaitGroup
		slots  = make(chan struct{}, 8)
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			code, body, err := s.get(path, header...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || code != http.StatusOK {
				failed = append(failed, fmt.Sprintf("%d %q (err %v)", code, body, err))
				return
			}
			counts[body]++
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		s.t.Fatalf("GET %s: %d of %d requests failed, first: %s", path, len(failed), n, failed[0])
	}
	return counts
}

func (s *server) get(path string, header ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+s.gateway+path, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// onlyVersion fails unless every answer was want.
func onlyVersion(t *testing.T, what string, counts map[string]int, n int, want string) {
	t.Helper()
	if counts[want] != n || len(counts) != 1 {
		t.Fatalf("%s: answers %v, want all %d from %s", what, counts, n, want)
	}
}

// poll calls cond until it holds, failing after limit (a bound against
// hangs, not a timing assertion); last describes the state for the failure.
func poll(t *testing.T, what string, limit time.Duration, cond func() bool, last func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %s", what, limit, last())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
