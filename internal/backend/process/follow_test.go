package process

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is written by FollowLogs and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestBackend_FollowLogs(t *testing.T) {
	b, err := New(Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	dir := b.logDir("m")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(dir, "m-1.log")
	appendFile(t, first, "old 1\nold 2\nold 3\n")

	var out lockedBuffer
	flushes := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.FollowLogs(ctx, "m", 2, &out, func() {
			select {
			case flushes <- struct{}{}:
			default:
			}
		})
	}()
	// waitFor waits for want in the output; the limit guards against a
	// hang, it is no timing assertion.
	waitFor := func(want string) {
		t.Helper()
		limit := time.After(20 * time.Second)
		for !strings.Contains(out.String(), want) {
			select {
			case <-flushes:
			case <-limit:
				t.Fatalf("%q not followed; got:\n%s", want, out.String())
			}
		}
	}

	waitFor("m-1 | old 3\n")
	if s := out.String(); strings.Contains(s, "old 1") || !strings.HasPrefix(s, "m-1 | old 2\n") {
		t.Fatalf("the first lines are not the last 2:\n%s", s)
	}
	appendFile(t, first, "new 1\npart")
	waitFor("m-1 | new 1\n")
	// A second instance started after the follow: all of its output.
	appendFile(t, filepath.Join(dir, "m-2.log"), "second 1\n")
	waitFor("m-2 | second 1\n")
	appendFile(t, first, "ial\n")
	waitFor("m-1 | partial\n")
	long := strings.Repeat("x", 80<<10)
	appendFile(t, first, long+"\n")
	waitFor("m-1 | " + long + "\n")

	appendFile(t, first, "last\n")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("FollowLogs = %v after the end of its context, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("FollowLogs did not return after its context ended")
	}
	// What was written before the end is read a last time.
	if s := out.String(); !strings.HasSuffix(s, "m-1 | last\n") {
		t.Errorf("the last line written before the end is missing; tail of the output: %q", s[max(0, len(s)-40):])
	}
	if n := strings.Count(out.String(), "|"); n != 7 {
		t.Errorf("%d lines followed, want 7 (each once):\n%.400s", n, out.String())
	}
}

func TestBackend_FollowLogs_badName(t *testing.T) {
	b, err := New(Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.FollowLogs(context.Background(), "../x", 0, &lockedBuffer{}, func() {}); err == nil {
		t.Fatal("FollowLogs of ../x: no error")
	}
}
