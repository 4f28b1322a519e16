package pool

import (
	"context"
	"testing"
	"time"
)

// TestInstance_BusyTime checks the busy clock the cost meter reads: it runs
// while at least one request is in flight, once for overlapping ones, and
// stands still otherwise.
func TestInstance_BusyTime(t *testing.T) {
	p := newTestPool(0, 10, nil)
	in := NewInstance("a", "x:1")
	p.Add(in)
	now := time.Now()
	if b := in.BusyTime(now); b != 0 {
		t.Fatalf("busy %v before any request", b)
	}
	l1, err := p.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	b1 := in.BusyTime(t1)
	// While busy, the clock runs with time.
	if d := in.BusyTime(t1.Add(time.Second)) - b1; d != time.Second {
		t.Fatalf("busy clock ran %v in a second", d)
	}
	l2, _ := p.Acquire(context.Background()) // overlaps: the same busy period
	l1.Release()
	if d := in.BusyTime(t1.Add(time.Second)) - b1; d != time.Second {
		t.Fatalf("with one request left, busy clock ran %v in a second", d)
	}
	l2.Release()
	end := in.BusyTime(time.Now())
	if end <= 0 {
		t.Fatalf("busy %v after a request", end)
	}
	// Idle, it stands still.
	if b := in.BusyTime(time.Now().Add(time.Hour)); b != end {
		t.Fatalf("busy clock moved from %v to %v while idle", end, b)
	}
}
