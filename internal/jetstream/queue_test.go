package jetstream

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := Start(Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Token: "secret-token"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func open(t *testing.T, s *Server, ackWait time.Duration) *Queue {
	t.Helper()
	q, err := Open(context.Background(), QueueConfig{URL: s.URL(), Token: "secret-token", AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

func TestStart_RefusesOpenNonLoopback(t *testing.T) {
	_, err := Start(Config{Listen: "0.0.0.0:0", StoreDir: t.TempDir()})
	if err == nil {
		t.Fatal("a server on every address without a token started")
	}
}

func TestOpen_WrongToken(t *testing.T) {
	s := startServer(t)
	if q, err := Open(context.Background(), QueueConfig{URL: s.URL(), Token: "wrong"}); err == nil {
		q.Close()
		t.Fatal("connected with a wrong token")
	}
}

// A delivery a runner took and never finished goes to another runner once
// its ack wait passes: what happens when a tandem replica dies mid-job.
func TestQueue_RedeliversWhatARunnerDroppedAndRunsEachOnce(t *testing.T) {
	s := startServer(t)
	a := open(t, s, time.Second)
	b := open(t, s, time.Second)
	ctx := context.Background()
	for i := range 5 {
		id := fmt.Sprintf("job-%d", i)
		if err := a.Put(ctx, id, []byte(`{"n":`+fmt.Sprint(i)+`}`)); err != nil {
			t.Fatal(err)
		}
		if err := a.Enqueue(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := a.Enqueue(ctx, id); err != nil { // a duplicate submit
			t.Fatal(err)
		}
	}
	taken, err := a.Next(ctx, 2, 2*time.Second)
	if err != nil || len(taken) != 2 {
		t.Fatalf("runner a took %d (%v), want 2", len(taken), err)
	}
	a.Close() // a dies holding two

	seen := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < 5 && time.Now().Before(deadline) {
		ds, err := b.Next(ctx, 10, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			seen[d.ID]++
			if err := d.Done(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 5 {
		if id := fmt.Sprintf("job-%d", i); seen[id] != 1 {
			t.Errorf("%s delivered to b %d times, want 1 (seen %v)", id, seen[id], seen)
		}
	}
	// Nothing is left: done ids are gone from the work queue.
	if ds, _ := b.Next(ctx, 10, 1500*time.Millisecond); len(ds) != 0 {
		t.Errorf("%d deliveries after all were done", len(ds))
	}
	rec, err := b.Get(ctx, "job-3")
	if err != nil || string(rec) != `{"n":3}` {
		t.Errorf("record job-3 = %q, %v", rec, err)
	}
	if _, err := b.Get(ctx, "nope"); err != ErrNotFound {
		t.Errorf("missing record: %v, want ErrNotFound", err)
	}
	n := 0
	if err := b.Each(ctx, func(string, []byte) error { n++; return nil }); err != nil || n != 5 {
		t.Errorf("Each saw %d records (%v), want 5", n, err)
	}
}

func TestQueue_LaterRedelivers(t *testing.T) {
	s := startServer(t)
	q := open(t, s, 10*time.Second)
	ctx := context.Background()
	if err := q.Enqueue(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	ds, err := q.Next(ctx, 1, 2*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("took %d, %v", len(ds), err)
	}
	if err := ds[0].Later(100 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ds, err = q.Next(ctx, 1, 5*time.Second)
	if err != nil || len(ds) != 1 || ds[0].ID != "x" {
		t.Fatalf("after Later: %v, %v", ds, err)
	}
	ds[0].Done()
}

// Records survive a restart of the server on the same folder.
func TestServer_KeepsRecordsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Config{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	q, err := Open(context.Background(), QueueConfig{URL: s.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	q.Put(ctx, "kept", []byte("v"))
	q.Enqueue(ctx, "kept")
	q.Close()
	s.Shutdown()

	s2, err := Start(Config{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	q2, err := Open(ctx, QueueConfig{URL: s2.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	if rec, err := q2.Get(ctx, "kept"); err != nil || string(rec) != "v" {
		t.Fatalf("record after restart: %q, %v", rec, err)
	}
	ds, err := q2.Next(ctx, 1, 3*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("delivery after restart: %d, %v", len(ds), err)
	}
	ds[0].Done()
}
