// Package testbin builds the project's helper programs (cmd/fakemodel,
// cmd/tandem) for tests, once per test binary, so that no test assumes a
// program already exists.
package testbin

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

var (
	mu    sync.Mutex
	built = map[string]string{}
	dir   string
)

// Build compiles the main package pkg (for example "tandem/cmd/fakemodel")
// and returns the path of the binary. Later calls return the same path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	if dir == "" {
		// Under the repository's .cache, not /tmp: a test run leaves no
		// folder of its own behind. One folder per checkout: git worktrees
		// may share one .cache (a link), and a binary built from another
		// branch must not replace this one's while its tests run.
		root, _ := filepath.Abs(RepoRoot(t))
		sum := sha256.Sum256([]byte(root))
		dir = filepath.Join(RepoRoot(t), ".cache", "testbin", hex.EncodeToString(sum[:6]))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	// Test binaries of several packages build at once: each writes its own
	// file and renames it into place, so none runs a half-written one.
	tmp, err := os.CreateTemp(dir, filepath.Base(pkg)+".*.tmp")
	if err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-o", tmp.Name(), pkg)
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		t.Fatal(err)
	}
	built[pkg] = out
	return out
}

func cgo() string {
	if v := os.Getenv("CGO_ENABLED"); v != "" {
		return v
	}
	return "1"
}

// RepoRoot returns the repository's root folder (where go.mod is).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var healthClient = &http.Client{Timeout: 10 * time.Second}

// WaitHealthy polls GET http://addr/health until it answers 200, failing
// the test after 30 seconds (a bound against a hang, not a timing check).
func WaitHealthy(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := healthClient.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered GET /health with 200: %v", addr, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
