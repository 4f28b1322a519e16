package shadow

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for a zero Config and a zero Copy.Timeout.
const (
	DefaultWorkers = 16
	DefaultQueue   = 256
	DefaultTimeout = 30 * time.Second
)

// Config sizes a Mirror.
type Config struct {
	Workers int // goroutines sending copies; zero or less means DefaultWorkers
	Queue   int // copies waiting for a worker; zero or less means DefaultQueue. When full, Submit drops.
}

// Copy is one mirrored request.
type Copy struct {
	// Model and Revision label the counters. Revision is the shadow
	// revision's short hash or name.
	Model, Revision string
	// Timeout bounds the whole shadow exchange, Send and reading its body
	// (the shadow revision's request timeout). Zero means DefaultTimeout.
	Timeout time.Duration
	// Send performs the shadow request and returns its status and the body it
	// answered; the Mirror reads the body to the end and closes it. Send is the
	// gateway's and must honour ctx, and so must reads of the body (the body
	// of an http.Response to a request made with ctx does). A non-nil err
	// means no answer; body may then be nil.
	Send func(ctx context.Context) (status int, body io.ReadCloser, err error)
}

// Mirror sends shadow copies on a bounded pool of workers. Safe for
// concurrent use.
type Mirror struct {
	queue  chan *Pair
	ctx    context.Context // canceled by Close; parent of every Send's context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	// closeMu makes "not closed, so queue" atomic with respect to Close, so
	// nothing is queued after Close has drained the queue.
	closeMu sync.RWMutex
	closed  bool

	metrics *vecs

	mu     sync.RWMutex
	series map[string]map[string]*series // model -> revision
}

// New starts a Mirror's workers. reg may be nil: then no metrics are
// registered (Stats still works). Registering on a reg that already holds
// the shadow metrics reuses them.
func New(cfg Config, reg prometheus.Registerer) *Mirror {
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mirror{
		queue:   make(chan *Pair, cfg.Queue),
		ctx:     ctx,
		cancel:  cancel,
		metrics: newVecs(reg),
		series:  map[string]map[string]*series{},
	}
	m.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go m.worker()
	}
	return m
}

// Close stops the workers. Copies still queued are dropped (and counted as
// dropped); running sends have their contexts canceled, and Close waits for
// them to end. Submit after Close drops. Close is idempotent.
func (m *Mirror) Close() {
	m.once.Do(func() {
		m.closeMu.Lock()
		m.closed = true
		m.closeMu.Unlock()
		m.cancel()
		m.wg.Wait()
		for {
			select {
			case p := <-m.queue:
				p.drop()
			default:
				return
			}
		}
	})
}

// Submit queues c and returns the Pair the primary reports its own outcome
// to. When the queue is full (or the Mirror is closed) it returns nil and
// counts a drop for (Model, Revision): the caller then just serves the
// primary. Pair's methods accept a nil Pair, so the caller need not check.
// Submit never blocks.
func (m *Mirror) Submit(c Copy) *Pair {
	s := m.lookup(c.Model, c.Revision)
	if len(m.queue) == cap(m.queue) { // full: drop without allocating
		s.dropped()
		return nil
	}
	p := &Pair{s: s, c: c}
	m.closeMu.RLock()
	if !m.closed {
		select {
		case m.queue <- p:
			m.closeMu.RUnlock()
			return p
		default:
		}
	}
	m.closeMu.RUnlock()
	s.dropped()
	return nil
}

func (m *Mirror) worker() {
	defer m.wg.Done()
	// Each worker's copies hang their timeouts on the worker's own context,
	// so starting one does not take a lock that every worker shares.
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	w := &sender{h: sha256.New(), buf: make([]byte, 32<<10)}
	for {
		select {
		case <-m.ctx.Done():
			return
		case p := <-m.queue:
			if m.ctx.Err() != nil { // closing: queued copies are dropped, not sent
				p.drop()
				continue
			}
			w.send(ctx, p)
		}
	}
}

// sender is one worker's reusable state: hashing the shadow's body costs no
// allocation per copy.
type sender struct {
	h   hash.Hash
	buf []byte
	sum [32]byte
}

func (w *sender) send(parent context.Context, p *Pair) {
	timeout := p.c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	p.s.nSent.Add(1)
	start := time.Now()
	status, err := w.exchange(ctx, p.c.Send)
	if err != nil {
		p.shadowFailed()
		return
	}
	p.s.observe(time.Since(start))
	p.s.status(status)
	p.shadowDone(status, w.sum)
}

// exchange calls send and hashes the body it answered into w.sum. A panic in
// send is an error of this copy, not of the process serving the primary.
func (w *sender) exchange(ctx context.Context, send func(context.Context) (int, io.ReadCloser, error)) (status int, err error) {
	defer func() {
		if r := recover(); r != nil {
			slog.Default().Error("shadow: Send panicked", "panic", r)
			err = fmt.Errorf("shadow: Send panicked: %v", r)
		}
	}()
	status, body, err := send(ctx)
	if err != nil {
		if body != nil {
			body.Close()
		}
		return 0, err
	}
	if body == nil {
		return 0, errors.New("shadow: Send returned no body")
	}
	defer body.Close()
	w.h.Reset()
	if _, err := io.CopyBuffer(w, body, w.buf); err != nil {
		return 0, err
	}
	// A body that ignored ctx might have run past the deadline: that is a
	// timeout all the same.
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	w.h.Sum(w.sum[:0])
	return status, nil
}

// Write feeds the hash. The sender is the io.Writer given to io.CopyBuffer,
// rather than the hash itself, so the copy uses the worker's buffer whatever
// the hash implements, and passing it does not allocate.
func (w *sender) Write(p []byte) (int, error) { return w.h.Write(p) }
