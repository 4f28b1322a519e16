package pool

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/backend"
)

func newTestPool(cc, maxQueue int, onDemand func()) *Pool {
	return New(Config{Name: "m", MaxQueue: maxQueue, ContainerConcurrency: cc,
		StartupTimeout: 5 * time.Second, BusyTimeout: 5 * time.Second, OnDemand: onDemand})
}

func TestPool_AcquirePicksLeastOutstanding(t *testing.T) {
	p := newTestPool(0, 10, nil)
	a, b, c := NewInstance("a", "x:1"), NewInstance("b", "x:2"), NewInstance("c", "x:3")
	p.Add(a)
	p.Add(b)
	p.Add(c)
	a.inflight.Store(3)
	b.inflight.Store(1)
	c.inflight.Store(2)
	l, err := p.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l.Instance != b {
		t.Fatalf("picked %s, want b (fewest outstanding)", l.Instance.ID)
	}
	if b.InFlight() != 2 {
		t.Fatalf("b in flight = %d, want 2", b.InFlight())
	}
	l.Release()
	l.Release() // twice is harmless
	if b.InFlight() != 1 {
		t.Fatalf("b in flight after release = %d, want 1", b.InFlight())
	}
}

func TestPool_ContainerConcurrencyQueuesThenDispatches(t *testing.T) {
	p := newTestPool(2, 10, nil)
	in := NewInstance("a", "x:1")
	p.Add(in)
	l1, _ := p.Acquire(context.Background())
	l2, _ := p.Acquire(context.Background())
	got := make(chan *Lease)
	go func() {
		l, err := p.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitUntil(t, func() bool { return p.Queued() == 1 })
	if in.InFlight() != 2 {
		t.Fatalf("in flight = %d, want the limit 2", in.InFlight())
	}
	l1.Release()
	l3 := <-got
	if l3.Instance != in || l3.ColdStart {
		t.Fatalf("queued request got %+v, want a warm lease on a", l3)
	}
	if in.InFlight() != 2 || p.Queued() != 0 {
		t.Fatalf("in flight %d queued %d, want 2 and 0", in.InFlight(), p.Queued())
	}
	l2.Release()
	l3.Release()
}

func TestPool_ColdStartWaitsForAdd(t *testing.T) {
	var pokes atomic.Int32
	p := newTestPool(0, 10, func() { pokes.Add(1) })
	got := make(chan *Lease)
	go func() {
		l, err := p.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitUntil(t, func() bool { return p.Queued() == 1 })
	if pokes.Load() == 0 {
		t.Fatal("a queued request did not ask for a scale-up")
	}
	in := NewInstance("a", "x:1")
	p.Add(in)
	l := <-got
	if !l.ColdStart || l.Instance != in {
		t.Fatalf("lease %+v, want a cold start on a", l)
	}
	l.Release()
}

func TestPool_QueueFull(t *testing.T) {
	p := newTestPool(0, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); p.Acquire(ctx) }()
	}
	waitUntil(t, func() bool { return p.Queued() == 2 })
	if _, err := p.Acquire(ctx); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third request: %v, want ErrQueueFull", err)
	}
	cancel()
	wg.Wait()
	if p.Queued() != 0 {
		t.Fatalf("queued = %d after cancel, want 0", p.Queued())
	}
}

func TestPool_StartTimeout(t *testing.T) {
	p := New(Config{Name: "m", MaxQueue: 5, StartupTimeout: 50 * time.Millisecond, BusyTimeout: time.Hour})
	_, err := p.Acquire(context.Background())
	if !errors.Is(err, ErrStartTimeout) {
		t.Fatalf("err = %v, want ErrStartTimeout", err)
	}
	if p.Queued() != 0 {
		t.Fatalf("queued = %d, want 0", p.Queued())
	}
}

func TestPool_FailAndClose(t *testing.T) {
	p := newTestPool(0, 5, nil)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() { _, err := p.Acquire(context.Background()); errs <- err }()
	}
	waitUntil(t, func() bool { return p.Queued() == 2 })
	boom := errors.New("instance exited with code 3")
	if n := p.Fail(boom); n != 2 {
		t.Fatalf("Fail answered %d waiters, want 2", n)
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("waiter got %v, want %v", err, boom)
		}
	}
	p.Close()
	if _, err := p.Acquire(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}

func TestInstance_DrainWaitsAndRefusesNewWork(t *testing.T) {
	p := newTestPool(0, 5, nil)
	in := NewInstance("a", "x:1")
	p.Add(in)
	l, _ := p.Acquire(context.Background())
	p.Remove("a")
	done := make(chan error)
	go func() { done <- in.Drain(context.Background()) }()
	waitUntil(t, in.draining.Load)
	if in.tryAcquire() {
		t.Fatal("a draining instance accepted a new request")
	}
	select {
	case <-done:
		t.Fatal("Drain returned with a request in flight")
	case <-time.After(20 * time.Millisecond):
	}
	l.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestInstance_ExitedWaitsForNews(t *testing.T) {
	in := NewInstance("a", "x:1")
	if _, ok := in.Exited(0); ok {
		t.Fatal("fresh instance reports an exit")
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		in.MarkExited(backend.Exit{Code: -1, Signal: "killed"})
	}()
	e, ok := in.Exited(5 * time.Second)
	if !ok || e.Signal != "killed" {
		t.Fatalf("Exited = %+v %v", e, ok)
	}
}

// Many goroutines racing Acquire/Release against membership changes never
// exceed the limit and never strand a waiter.
func TestPool_ConcurrentNoStrandedWaiters(t *testing.T) {
	p := newTestPool(3, 1000, nil)
	ins := []*Instance{NewInstance("a", "x:1"), NewInstance("b", "x:2")}
	for _, in := range ins {
		p.Add(in)
	}
	var wg sync.WaitGroup
	var over atomic.Bool
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				l, err := p.Acquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if l.Instance.InFlight() > 3 {
					over.Store(true)
				}
				l.Release()
			}
		}()
	}
	wg.Wait()
	if over.Load() {
		t.Fatal("an instance exceeded container_concurrency")
	}
	if p.Queued() != 0 || p.InFlight() != 0 {
		t.Fatalf("queued %d in flight %d after the storm", p.Queued(), p.InFlight())
	}
}

func TestPool_SampleIsTimeWeighted(t *testing.T) {
	p := newTestPool(0, 5, nil)
	p.Add(NewInstance("a", "x:1"))
	t0 := time.Now()
	p.Sample(t0)
	l, _ := p.Acquire(context.Background())
	time.Sleep(20 * time.Millisecond)
	l.Release()
	avg, dt, last := p.Sample(time.Now())
	if avg <= 0 || avg > 1 || dt <= 0 {
		t.Fatalf("avg %v over %v, want in (0,1]", avg, dt)
	}
	if last.Before(t0) {
		t.Fatalf("last active %v before the request", last)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
