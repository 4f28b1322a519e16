package jobs

import (
	"context"
	"testing"
	"time"

	"tandem/internal/jetstream"
)

// TestShared_ReplicaLostMidAttempt: two replicas share a JetStream queue;
// replica A accepts every job, takes some and is lost while running them
// (its connection drops, nothing acknowledged); replica B runs every job,
// those A held included, once A's deliveries time out.
func TestShared_ReplicaLostMidAttempt(t *testing.T) {
	srv, err := jetstream.Start(jetstream.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Token: "test-token-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	queue := func() *jetstream.Queue {
		q, err := jetstream.Open(context.Background(), jetstream.QueueConfig{URL: srv.URL(), Token: "test-token-0123456789", AckWait: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	qa, qb := queue(), queue()
	t.Cleanup(qb.Close)

	// A's attempts never end (until it is closed): it dies holding them.
	gwA := &fakeGateway{block: make(chan struct{})}
	cfgA := testConfig(t, "", nil)
	cfgA.Queue, cfgA.PerModel = qa, 3
	a := open(t, cfgA)
	a.Start(gwA)
	t.Cleanup(func() { a.Close(); qa.Close() })

	var ids []string
	for range 10 {
		ids = append(ids, submit(t, a, "iris", "x"))
	}
	deadline := time.Now().Add(20 * time.Second)
	for gwA.inFlight.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("replica A took %d jobs, want 3", gwA.inFlight.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	qa.Close() // A is lost: its connection drops with 3 deliveries unacknowledged

	gwB := &fakeGateway{}
	cfgB := testConfig(t, "", nil)
	cfgB.Queue = qb
	b := open(t, cfgB)
	b.Start(gwB)
	t.Cleanup(func() { b.Close() })
	interrupted := 0
	for _, id := range ids {
		j := waitFinal(t, b, id)
		if j.Status != Succeeded {
			t.Errorf("job %s = %s (%s)", id, j.Status, j.Reason)
		}
		if j.Attempts == 2 {
			interrupted++ // one attempt on A, cut; the next on B
		}
	}
	if interrupted != 3 {
		t.Errorf("%d jobs were run again after A was lost, want the 3 it held", interrupted)
	}
	seen := map[string]int{}
	for _, c := range gwB.seen() {
		seen[c.jobID]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("replica B ran job %s %d times, want 1", id, seen[id])
		}
	}
	// Both replicas answer for every job.
	if _, tenant, err := b.Lookup(ids[0]); err != nil || tenant != "acme" {
		t.Errorf("B's Lookup of a job A accepted: %q, %v", tenant, err)
	}
	list, err := b.List(Filter{Status: Succeeded})
	if err != nil || len(list) != 10 {
		t.Errorf("B lists %d succeeded jobs (%v), want 10", len(list), err)
	}
}
