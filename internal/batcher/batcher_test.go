package batcher_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"tandem/internal/batcher"
)

// recorder is a Func that records each batch it runs and answers each item
// with item*10.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	err     error
	panics  bool
	gate    chan struct{} // when not nil, runs wait for it to close
}

func (r *recorder) run(ctx context.Context, items []int) ([]int, error) {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(items))
	r.mu.Unlock()
	if r.panics {
		panic("boom")
	}
	if r.err != nil {
		return nil, r.err
	}
	out := make([]int, len(items))
	for i, v := range items {
		out[i] = v * 10
	}
	return out, nil
}

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []int
	for _, b := range r.batches {
		s = append(s, len(b))
	}
	slices.Sort(s)
	return s
}

// doAll calls Do concurrently for items 0..n-1 (key from keyOf) and checks
// every caller gets its own answer.
func doAll(t *testing.T, b *batcher.Batcher[int, int], n int, keyOf func(int) string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := b.Do(context.Background(), keyOf(i), 1, i)
			if err != nil || got != i*10 {
				errs <- fmt.Errorf("item %d: got %d, %v; want %d", i, got, err, i*10)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestBatcher_Do(t *testing.T) {
	const forever = time.Hour // batches close only when full
	cases := []struct {
		name    string
		maxSize int
		n       int
		keys    int
		want    []int // batch sizes, sorted
	}{
		{"full batches", 8, 64, 1, []int{8, 8, 8, 8, 8, 8, 8, 8}},
		{"keys do not mix", 4, 16, 2, []int{4, 4, 4, 4}},
		{"size one runs alone", 1, 3, 1, []int{1, 1, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			b := batcher.New(batcher.Config{MaxSize: c.maxSize, MaxDelay: forever}, rec.run)
			doAll(t, b, c.n, func(i int) string { return fmt.Sprint(i % c.keys) })
			if got := rec.sizes(); !slices.Equal(got, c.want) {
				t.Errorf("batch sizes %v, want %v", got, c.want)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, bt := range rec.batches {
				for _, v := range bt {
					if v%c.keys != bt[0]%c.keys {
						t.Errorf("batch %v mixes keys", bt)
					}
				}
			}
		})
	}
}

func TestBatcher_Do_delayClosesBatch(t *testing.T) {
	rec := &recorder{}
	var stats []batcher.Stats
	var mu sync.Mutex
	b := batcher.New(batcher.Config{MaxSize: 100, MaxDelay: time.Millisecond, Observe: func(s batcher.Stats) {
		mu.Lock()
		stats = append(stats, s)
		mu.Unlock()
	}}, rec.run)
	doAll(t, b, 5, func(int) string { return "k" })
	n := 0
	for _, s := range rec.sizes() {
		n += s
	}
	if n != 5 {
		t.Errorf("ran %d items, want 5", n)
	}
	mu.Lock()
	defer mu.Unlock()
	items := 0
	for _, s := range stats {
		items += s.Items
		if s.Size != s.Items || len(s.Waits) != s.Items || s.Key != "k" {
			t.Errorf("stats %+v", s)
		}
	}
	if items != 5 {
		t.Errorf("observed %d items, want 5", items)
	}
}

func TestBatcher_Do_overflowClosesOpenBatch(t *testing.T) {
	rec := &recorder{}
	b := batcher.New(batcher.Config{MaxSize: 4, MaxDelay: time.Hour}, rec.run)
	first := make(chan error, 1)
	go func() {
		_, err := b.Do(context.Background(), "k", 3, 1)
		first <- err
	}()
	waitFor(t, func() bool { return b.Open("k") == 3 })
	// 3 + 2 > 4: the open batch is sent, and a new one holds these 2 units.
	second := make(chan error, 1)
	go func() {
		_, err := b.Do(context.Background(), "k", 2, 2)
		second <- err
	}()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return b.Open("k") == 2 })
	// 2 + 2 fills it.
	if got, err := b.Do(context.Background(), "k", 2, 3); got != 30 || err != nil {
		t.Fatalf("got %d, %v", got, err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if got := rec.sizes(); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("batches %v, want one of 1 item and one of 2", got)
	}
}

func TestBatcher_Do_cancel(t *testing.T) {
	rec := &recorder{}
	b := batcher.New(batcher.Config{MaxSize: 2, MaxDelay: time.Hour}, rec.run)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.Do(ctx, "k", 1, 1)
		done <- err
	}()
	waitFor(t, func() bool { return b.Open("k") == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	// The next call fills the batch; the cancelled caller is left out.
	if got, err := b.Do(context.Background(), "k", 1, 2); got != 20 || err != nil {
		t.Fatalf("got %d, %v", got, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.batches) != 1 || !slices.Equal(rec.batches[0], []int{2}) {
		t.Errorf("batches %v, want [[2]]", rec.batches)
	}
}

func TestBatcher_Do_batchContext(t *testing.T) {
	started := make(chan context.Context, 1)
	release := make(chan struct{})
	run := func(ctx context.Context, items []int) ([]int, error) {
		started <- ctx
		select {
		case <-release:
		case <-ctx.Done():
		}
		return items, ctx.Err()
	}
	b := batcher.New(batcher.Config{MaxSize: 2, MaxDelay: time.Hour}, run)
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	err1 := make(chan error, 1)
	go func() { _, err := b.Do(ctx1, "k", 1, 1); err1 <- err }()
	waitFor(t, func() bool { return b.Open("k") == 1 })
	err2 := make(chan error, 1)
	go func() { _, err := b.Do(ctx2, "k", 1, 2); err2 <- err }()
	batchCtx := <-started

	// One caller giving up does not cancel the batch for the other.
	cancel1()
	if err := <-err1; !errors.Is(err, context.Canceled) {
		t.Fatalf("caller 1: %v", err)
	}
	close(release)
	if err := <-err2; err != nil {
		t.Fatalf("caller 2: %v (the batch was cancelled with a caller still waiting)", err)
	}
	_ = batchCtx

	// When every caller has given up, the batch's context ends.
	b2 := batcher.New(batcher.Config{MaxSize: 1}, run)
	ctx3, cancel3 := context.WithCancel(context.Background())
	go b2.Do(ctx3, "k", 1, 3)
	batchCtx = <-started
	cancel3()
	<-batchCtx.Done()
}

func TestBatcher_Do_errors(t *testing.T) {
	cases := []struct {
		name string
		rec  *recorder
		want error
	}{
		{"func error", &recorder{err: errors.New("model down")}, nil},
		{"panic", &recorder{panics: true}, batcher.ErrPanic},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := batcher.New(batcher.Config{MaxSize: 2, MaxDelay: time.Hour}, c.rec.run)
			errs := make(chan error, 2)
			for i := range 2 {
				go func() { _, err := b.Do(context.Background(), "k", 1, i); errs <- err }()
			}
			for range 2 {
				err := <-errs
				if err == nil || (c.want != nil && !errors.Is(err, c.want)) || (c.rec.err != nil && !errors.Is(err, c.rec.err)) {
					t.Errorf("err = %v", err)
				}
			}
		})
	}
	t.Run("wrong number of results", func(t *testing.T) {
		b := batcher.New(batcher.Config{MaxSize: 1}, func(context.Context, []int) ([]int, error) { return nil, nil })
		if _, err := b.Do(context.Background(), "k", 1, 1); !errors.Is(err, batcher.ErrBadResults) {
			t.Errorf("err = %v", err)
		}
	})
}

// waitFor polls cond; the batcher's hand-offs are goroutines.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
