package docker

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf is written by FollowLogs and read by the test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBackend_FollowLogs(t *testing.T) {
	f := newFakeEngine("img:1")
	b := newFakeBackend(t, f)
	m := testManifest(nil)
	if _, err := b.Start(context.Background(), testSpec("m-1", m)); err != nil {
		t.Fatal(err)
	}
	c1 := f.byName(containerName("/data", "m-1")).id
	f.log(c1, 1, "before\n")

	var out syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.FollowLogs(ctx, "m", 0, &out, func() {}) }()
	// waitFor polls the output; the limit guards against a hang.
	waitFor := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), want); {
			if time.Now().After(deadline) {
				t.Fatalf("%q not followed; got:\n%s", want, out.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("m-1 | before\n")
	f.log(c1, 2, "after, on stderr\n")
	waitFor("m-1 | after, on stderr\n")

	// An instance started after the follow began.
	if _, err := b.Start(context.Background(), testSpec("m-2", m)); err != nil {
		t.Fatal(err)
	}
	c2 := f.byName(containerName("/data", "m-2")).id
	f.log(c2, 1, "second\n")
	waitFor("m-2 | second\n")
	// A container that ends ends its stream, not the follow.
	f.exit(c2, 0, false)
	waitExit(t, b, "m-2")
	f.log(c1, 1, "still\n")
	waitFor("m-1 | still\n")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("FollowLogs = %v after its context ended, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("FollowLogs did not return after its context ended")
	}
	if n := strings.Count(out.String(), " | "); n != 4 {
		t.Errorf("%d lines, want 4, each once:\n%s", n, out.String())
	}
}
