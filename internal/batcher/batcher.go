// Package batcher groups concurrent calls into batches: calls with the same
// key that arrive within MaxDelay of the first one, up to MaxSize units, run
// as one call of a user function, and each caller gets back its own result.
//
// Who owns what: a Batcher's mutex guards the open batch of each key, and
// nothing else. A batch is open until it is full or its timer fires; then it
// is closed (removed from the map under the mutex) and run on its own
// goroutine, so a slow run never holds up new calls, which open a new batch.
// Several closed batches of one key may run at once. Each caller waits on a
// one-slot channel that the run fills, or on its own context, whichever
// comes first; a caller that gives up does not hold up the batch, and the
// batch's context is cancelled only when every caller in it has given up.
package batcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Func runs one batch: items in arrival order. It returns one result per
// item, in the same order, or an error that every caller in the batch gets.
// It is called on a goroutine of its own, possibly several at once.
type Func[T, R any] func(ctx context.Context, items []T) ([]R, error)

// Stats describes one batch as it starts, for metrics.
type Stats struct {
	Key string
	// Items is the number of calls in the batch; Size the sum of their sizes.
	Items, Size int
	// Waits is how long each item waited in the batch before it ran.
	Waits []time.Duration
}

// Config tunes a Batcher.
type Config struct {
	// MaxSize is the most units (sum of the sizes given to Do) in a batch.
	// A call of MaxSize or more units runs alone at once.
	MaxSize int
	// MaxDelay is the longest a batch stays open after its first call.
	MaxDelay time.Duration
	// Observe, when set, is called as each batch starts. It must not block.
	Observe func(Stats)
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// ErrBadResults is returned to callers when a Func returns a different
// number of results than items.
var ErrBadResults = errors.New("batcher: batch function returned a wrong number of results")

// Batcher batches calls to one Func. It is safe for concurrent use.
type Batcher[T, R any] struct {
	cfg  Config
	run  Func[T, R]
	mu   sync.Mutex
	open map[string]*batch[T, R]
}

type call[T, R any] struct {
	ctx   context.Context
	item  T
	size  int
	since time.Time
	done  chan result[R] // one slot: the run never blocks on it
}

type result[R any] struct {
	v   R
	err error
}

type batch[T, R any] struct {
	key   string
	size  int
	calls []*call[T, R]
	timer *time.Timer
}

// New returns a Batcher that runs batches with run.
func New[T, R any](cfg Config, run Func[T, R]) *Batcher[T, R] {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxSize < 1 {
		cfg.MaxSize = 1
	}
	return &Batcher[T, R]{cfg: cfg, run: run, open: map[string]*batch[T, R]{}}
}

// Do adds item, which counts size units, to the open batch for key (opening
// one if there is none) and blocks until that batch has run, returning this
// item's result, or until ctx is done, returning ctx.Err(). Calls only
// share a batch when their keys are equal.
func (b *Batcher[T, R]) Do(ctx context.Context, key string, size int, item T) (R, error) {
	c := &call[T, R]{ctx: ctx, item: item, size: size, since: b.cfg.Now(), done: make(chan result[R], 1)}
	if size >= b.cfg.MaxSize || b.cfg.MaxDelay <= 0 {
		go b.start(&batch[T, R]{key: key, size: size, calls: []*call[T, R]{c}})
		return wait(ctx, c)
	}
	b.mu.Lock()
	bt := b.open[key]
	if bt != nil && bt.size+size > b.cfg.MaxSize {
		b.closeLocked(bt)
		go b.start(bt)
		bt = nil
	}
	if bt == nil {
		bt = &batch[T, R]{key: key}
		b.open[key] = bt
		bt.timer = time.AfterFunc(b.cfg.MaxDelay, func() { b.expire(bt) })
	}
	bt.calls = append(bt.calls, c)
	bt.size += size
	full := bt.size >= b.cfg.MaxSize
	if full {
		b.closeLocked(bt)
	}
	b.mu.Unlock()
	if full {
		go b.start(bt)
	}
	return wait(ctx, c)
}

// Open returns the units in the open batch for key (0 if none).
func (b *Batcher[T, R]) Open(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bt := b.open[key]; bt != nil {
		return bt.size
	}
	return 0
}

func wait[T, R any](ctx context.Context, c *call[T, R]) (R, error) {
	select {
	case r := <-c.done:
		return r.v, r.err
	case <-ctx.Done():
		var zero R
		return zero, ctx.Err()
	}
}

// closeLocked removes bt from the open batches; b.mu must be held.
func (b *Batcher[T, R]) closeLocked(bt *batch[T, R]) {
	if b.open[bt.key] == bt {
		delete(b.open, bt.key)
	}
	if bt.timer != nil {
		bt.timer.Stop()
	}
}

func (b *Batcher[T, R]) expire(bt *batch[T, R]) {
	b.mu.Lock()
	if b.open[bt.key] != bt { // already closed because it filled up
		b.mu.Unlock()
		return
	}
	delete(b.open, bt.key)
	b.mu.Unlock()
	b.start(bt)
}

// start runs a closed batch and hands each caller its result.
func (b *Batcher[T, R]) start(bt *batch[T, R]) {
	now := b.cfg.Now()
	// Callers that gave up while the batch was open are left out.
	live := bt.calls[:0:0]
	for _, c := range bt.calls {
		if c.ctx.Err() == nil {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		return
	}
	if b.cfg.Observe != nil {
		st := Stats{Key: bt.key, Items: len(live), Waits: make([]time.Duration, len(live))}
		for i, c := range live {
			st.Size += c.size
			st.Waits[i] = now.Sub(c.since)
		}
		b.cfg.Observe(st)
	}

	// The batch lives as long as any of its callers still waits.
	ctx, cancel := context.WithCancel(context.WithoutCancel(live[0].ctx))
	defer cancel()
	var waiting atomic.Int64
	waiting.Store(int64(len(live)))
	stops := make([]func() bool, len(live))
	for i, c := range live {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()

	items := make([]T, len(live))
	for i, c := range live {
		items[i] = c.item
	}
	rs, err := b.safeRun(ctx, items)
	if err == nil && len(rs) != len(live) {
		err = ErrBadResults
	}
	for i, c := range live {
		if err != nil {
			c.done <- result[R]{err: err}
		} else {
			c.done <- result[R]{v: rs[i]}
		}
	}
}

// ErrPanic is returned to the callers of a batch whose Func panicked.
var ErrPanic = errors.New("batcher: batch function panicked")

func (b *Batcher[T, R]) safeRun(ctx context.Context, items []T) (rs []R, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, p)
		}
	}()
	return b.run(ctx, items)
}
