package jobs

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/gateway"
	"tandem/internal/jetstream"
	"tandem/internal/manifest"
	"tandem/internal/pool"
	"tandem/internal/problem"
)

// Config is what a Manager needs. The zero value of an optional field
// means its default.
type Config struct {
	// DataDir holds jobs.db (when Queue is nil).
	DataDir string
	// Queue, when set, keeps the jobs on a JetStream server shared by
	// several tandem replicas instead of jobs.db: a job accepted by one
	// replica is run by whichever takes it, and by another when that one
	// is lost mid-attempt. The caller opens and closes it.
	Queue *jetstream.Queue
	// Identify resolves the model (a *problem.Error 404 when it is not
	// deployed) and names the caller's tenant (401, 403 refusals), without
	// spending any of its limits: gateway.Gateway.Identify.
	Identify func(ctx context.Context, model string, h http.Header) (tenant string, secured bool, err error)
	// Lookup returns a deployment's manifest (its async block and
	// max_queue); false for an unknown model, whose jobs get the defaults.
	Lookup func(model string) (*manifest.Manifest, bool)
	// PerModel bounds the attempts in flight per deployment (default 8,
	// and never over half its scaling.max_queue). With a Queue it bounds
	// this replica's attempts across deployments.
	PerModel int
	// MaxBody bounds a job's request body (default 6 MiB, Lambda's
	// synchronous payload limit); more is a 413.
	MaxBody int64
	// MaxResult bounds the part of an answer kept (default 1 MiB).
	MaxResult int64
	// Retention is how long a finished job is kept (default 24h).
	Retention time.Duration
	// Backoff is the wait before a first retry (default 1s), doubling up
	// to MaxBackoff (default 5m).
	Backoff, MaxBackoff time.Duration
	// Client posts to destinations (default: a client with a 10s timeout).
	Client *http.Client
	Logger *slog.Logger
	// Registerer receives the jobs' metrics (nil: none).
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultPerModel   = 8
	DefaultMaxBody    = 6 << 20
	DefaultMaxResult  = 1 << 20
	DefaultRetention  = 24 * time.Hour
	DefaultBackoff    = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// destinationTries bounds the POSTs of one job's record.
	destinationTries = 3
)

// Manager accepts, stores and runs jobs. Submit, Lookup and List are safe
// for concurrent use; Start once, then Close.
type Manager struct {
	cfg     Config
	db      *db              // nil with a shared queue
	q       *jetstream.Queue // nil with jobs.db
	log     *slog.Logger
	handler http.Handler
	metrics *metrics

	mu     sync.Mutex
	queues map[string]*queue // by model; owned by the dispatcher, pushed to by all
	poke   chan struct{}

	cancel      context.CancelFunc
	wg          sync.WaitGroup // the dispatcher, attempts and deliveries
	undelivered []*Job
}

type queue struct {
	due     dueHeap
	running int
}

// Open opens the jobs' store under cfg.DataDir and queues again every job
// that was queued or running when tandem last stopped or crashed.
func Open(cfg Config) (*Manager, error) {
	if cfg.PerModel <= 0 {
		cfg.PerModel = DefaultPerModel
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxResult <= 0 {
		cfg.MaxResult = DefaultMaxResult
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Lookup == nil {
		cfg.Lookup = func(string) (*manifest.Manifest, bool) { return nil, false }
	}
	log := cfg.Logger.With("component", "jobs")
	if cfg.Queue != nil {
		return &Manager{cfg: cfg, q: cfg.Queue, log: log, queues: map[string]*queue{}, poke: make(chan struct{}, 1),
			metrics: newMetrics(cfg.Registerer)}, nil
	}
	d, pending, undelivered, err := openDB(filepath.Join(cfg.DataDir, File), log)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, db: d, log: log, queues: map[string]*queue{}, poke: make(chan struct{}, 1), undelivered: undelivered,
		metrics: newMetrics(cfg.Registerer)}
	m.metrics.pending.Add(float64(len(pending)))
	now := cfg.Now()
	for _, j := range pending {
		at := j.NextAt
		if j.Status == Running || at.IsZero() {
			at = now // an attempt a crash or stop interrupted goes again now
		}
		m.push(j.Model, j.ID, at)
	}
	if len(pending) > 0 {
		log.Info("jobs queued again after a restart", "jobs", len(pending))
	}
	return m, nil
}

// Start runs the jobs through h (the gateway) until Close.
func (m *Manager) Start(h http.Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	m.handler, m.cancel = h, cancel
	if m.q != nil {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.dispatchShared(ctx) }()
		return
	}
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.dispatch(ctx) }()
	go func() { defer m.wg.Done(); m.pruneEvery(ctx, time.Minute) }()
	for _, j := range m.undelivered {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.deliver(ctx, j) }()
	}
	m.undelivered = nil
}

// Close stops running jobs and closes the store. Attempts in flight are
// cancelled and not recorded: they stay running in the store and run
// again at the next start.
func (m *Manager) Close() error {
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
	if m.db == nil {
		return nil
	}
	return m.db.close()
}

// Submit stores r, a request to model, as a job and returns its id once
// the job is durably stored. The request's body is read here. The caller's
// credentials (Authorization, X-API-Key, Cookie) are not stored: the job
// runs as the tenant Identify named. Errors are *problem.Error: 404 for an
// unknown model, a refusal of the caller, 413 for a body over MaxBody, 503
// when the store fails.
func (m *Manager) Submit(ctx context.Context, model string, r *http.Request) (string, error) {
	tenant, _, err := m.cfg.Identify(ctx, model, r.Header)
	if err != nil {
		return "", err
	}
	tooBig := problem.New(http.StatusRequestEntityTooLarge, "body_too_large",
		fmt.Sprintf("a job's request body may hold at most %d bytes", m.cfg.MaxBody))
	if r.ContentLength > m.cfg.MaxBody {
		return "", tooBig
	}
	var body []byte
	if r.Body != nil {
		body, err = io.ReadAll(io.LimitReader(r.Body, m.cfg.MaxBody+1))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "", problem.New(http.StatusRequestTimeout, "body_timeout", "the request body did not arrive in time")
		}
		if err != nil {
			return "", problem.New(http.StatusBadRequest, "bad_body", "reading the request body: "+err.Error())
		}
		if int64(len(body)) > m.cfg.MaxBody {
			return "", tooBig
		}
	}
	now := m.cfg.Now()
	j := &Job{ID: newID(now), Model: model, Tenant: tenant, Status: Queued, CreatedAt: now, UpdatedAt: now, NextAt: now,
		Request: &Request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: storedHeader(r.Header),
			Body: body, RemoteAddr: r.RemoteAddr, Host: r.Host}}
	notStored := func(err error) error {
		m.log.Error("storing a job failed", "model", model, "err", err)
		return problem.New(http.StatusServiceUnavailable, "job_not_stored", "the job could not be stored: "+err.Error())
	}
	if err := m.put(j); err != nil {
		return "", notStored(err)
	}
	m.metrics.accepted.WithLabelValues(model).Inc()
	if m.q != nil {
		if err := m.q.Enqueue(ctx, j.ID); err != nil {
			m.q.Delete(context.Background(), j.ID) // never run: not accepted
			return "", notStored(err)
		}
		return j.ID, nil
	}
	m.metrics.pending.Inc()
	m.push(model, j.ID, now)
	return j.ID, nil
}

// notStored are the request headers a job does not keep: credentials
// (the job runs as the stored tenant), the async request itself, and what
// describes the original connection.
var notStored = map[string]bool{
	"Authorization": true, "Proxy-Authorization": true, "X-Api-Key": true, "Cookie": true,
	"Prefer": true, "X-Amz-Invocation-Type": true, HeaderJobID: true, "Expect": true, "Content-Length": true,
}

func storedHeader(h http.Header) http.Header {
	conn := h.Values("Connection")
	out := http.Header{}
	for k, v := range h {
		if notStored[k] || pool.IsHop(k, conn) {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

// newID is 16 hex digits of nanoseconds then 8 random: ids sort by
// acceptance, and cannot be guessed from one another.
func newID(now time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

func validID(id string) bool {
	if len(id) != 24 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// Get returns a stored job.
func (m *Manager) Get(id string) (*Job, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	return m.get(id)
}

// Lookup returns a job's public record and its tenant (gateway.Jobs).
func (m *Manager) Lookup(id string) (any, string, error) {
	j, err := m.Get(id)
	if err != nil {
		return nil, "", err
	}
	return j.view(), j.Tenant, nil
}

var _ gateway.Jobs = (*Manager)(nil)

// Filter selects jobs for List.
type Filter struct {
	Status Status // "" = any
	Model  string // "" = any
	Limit  int    // the newest this many; 0 = all
}

// List returns the jobs that match f, newest first, as shown to callers.
func (m *Manager) List(f Filter) ([]*Job, error) {
	var out []*Job
	err := m.scan(func(j *Job) bool {
		if (f.Status == "" || j.Status == f.Status) && (f.Model == "" || j.Model == f.Model) {
			out = append(out, j.view())
			if f.Limit > 0 && len(out) > f.Limit {
				out = out[1:]
			}
		}
		return true
	})
	for i, k := 0, len(out)-1; i < k; i, k = i+1, k-1 {
		out[i], out[k] = out[k], out[i]
	}
	return out, err
}

// push queues job id of model, due at.
func (m *Manager) push(model, id string, at time.Time) {
	m.mu.Lock()
	q := m.queues[model]
	if q == nil {
		q = &queue{}
		m.queues[model] = q
	}
	heap.Push(&q.due, due{id: id, at: at})
	m.mu.Unlock()
	m.wake()
}

func (m *Manager) wake() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// limit is how many attempts of model may be in flight.
func (m *Manager) limit(model string) int {
	n := m.cfg.PerModel
	if mf, ok := m.cfg.Lookup(model); ok && mf.Scaling.MaxQueue > 0 {
		n = min(n, max(1, mf.Scaling.MaxQueue/2))
	}
	return n
}

func (m *Manager) policy(model string) Policy {
	mf, ok := m.cfg.Lookup(model)
	if !ok {
		mf = &manifest.Manifest{}
	}
	return PolicyOf(mf, m.cfg.Backoff, m.cfg.MaxBackoff)
}

// dispatch starts every due job whose deployment has room, then sleeps
// until the next is due or something is pushed or finished.
func (m *Manager) dispatch(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		now := m.cfg.Now()
		var next time.Time
		for model, q := range m.queues {
			limit := m.limit(model)
			for q.running < limit && q.due.Len() > 0 && !q.due[0].at.After(now) {
				e := heap.Pop(&q.due).(due)
				q.running++
				m.wg.Add(1)
				go m.attempt(ctx, model, e.id)
			}
			if q.running < limit && q.due.Len() > 0 && (next.IsZero() || q.due[0].at.Before(next)) {
				next = q.due[0].at
			}
		}
		m.mu.Unlock()
		wait := time.Hour
		if !next.IsZero() {
			wait = next.Sub(now)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.poke:
		case <-timer.C:
		}
	}
}

// attempt runs job id once and records what follows (jobs.db mode).
func (m *Manager) attempt(ctx context.Context, model, id string) {
	defer m.wg.Done()
	retryAt := time.Time{}
	defer func() {
		m.mu.Lock()
		q := m.queues[model]
		q.running--
		if !retryAt.IsZero() {
			heap.Push(&q.due, due{id: id, at: retryAt})
		}
		m.mu.Unlock()
		m.wake()
	}()
	j, err := m.get(id)
	if err != nil {
		m.log.Error("skipping a job that cannot be read from the store", "id", id, "err", err)
		return
	}
	if j.Status.Final() {
		return
	}
	retryAt, _ = m.step(ctx, j)
	if m.deliverable(j) {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.deliver(ctx, j) }()
	}
}

// step makes j's next attempt, or fails it when it may not start, and
// records the outcome. retryAt is when to try again (zero: j ended, or the
// attempt was interrupted); interrupted means ctx ended mid-attempt and
// nothing was recorded (j stays running and runs again).
func (m *Manager) step(ctx context.Context, j *Job) (retryAt time.Time, interrupted bool) {
	p := m.policy(j.Model)
	now := m.cfg.Now()
	if ok, reason := p.Start(j, now); !ok {
		m.end(j, p, Failed, reason, now)
		return time.Time{}, false
	}
	j.Attempts++
	j.Status, j.NextAt, j.UpdatedAt = Running, time.Time{}, now
	if err := m.put(j); err != nil {
		m.log.Error("recording a job's attempt failed; trying again later", "id", j.ID, "err", err)
		return now.Add(Backoff(1, m.cfg.Backoff, m.cfg.MaxBackoff, mrand.Float64())), false
	}
	status, res := m.replay(ctx, j)
	if ctx.Err() != nil {
		return time.Time{}, true // stopping: the job stays running and goes again
	}
	now = m.cfg.Now()
	d := p.After(j, status, now, mrand.Float64())
	j.Result = res
	if d.Status == Queued {
		j.Status, j.NextAt, j.Reason, j.UpdatedAt = Queued, d.At, d.Reason, now
		if err := m.put(j); err != nil {
			m.log.Error("recording a job's retry failed", "id", j.ID, "err", err)
		}
		m.metrics.retries.WithLabelValues(j.Model).Inc()
		return d.At, false
	}
	m.end(j, p, d.Status, d.Reason, now)
	return time.Time{}, false
}

// end records j's final status and posts it to its destination.
func (m *Manager) end(j *Job, p Policy, s Status, reason string, now time.Time) {
	j.Status, j.Reason, j.NextAt, j.UpdatedAt = s, reason, time.Time{}, now
	dest := p.OnSuccess
	if s == Failed {
		dest = p.OnFailure
		m.log.Warn("job failed: in the dead-letter list", "id", j.ID, "model", j.Model, "attempts", j.Attempts, "reason", reason)
	}
	if dest != "" {
		j.Destination = "pending " + dest
	}
	if err := m.put(j); err != nil {
		m.log.Error("recording a job's end failed", "id", j.ID, "err", err)
		return
	}
	if m.q == nil {
		m.metrics.pending.Dec()
	}
	m.metrics.finished.WithLabelValues(j.Model, string(s)).Inc()
}

// deliverable reports whether j ended with a destination still to post.
func (m *Manager) deliverable(j *Job) bool {
	return j.Status.Final() && strings.HasPrefix(j.Destination, "pending ")
}

// replay sends the stored request through the gateway, as its tenant, and
// returns the answer's status (0 when the gateway panicked) and result.
func (m *Manager) replay(ctx context.Context, j *Job) (status int, res *Result) {
	rq := j.Request
	if rq == nil {
		return http.StatusBadRequest, &Result{Status: http.StatusBadRequest, Body: "the stored job has no request"}
	}
	target := rq.Path
	if rq.Query != "" {
		target += "?" + rq.Query
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return http.StatusBadRequest, &Result{Status: http.StatusBadRequest, Body: "the stored request's path is not valid: " + err.Error()}
	}
	req := (&http.Request{Method: rq.Method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: rq.Header.Clone(), Body: io.NopCloser(bytes.NewReader(rq.Body)), ContentLength: int64(len(rq.Body)),
		Host: rq.Host, RemoteAddr: rq.RemoteAddr, RequestURI: target}).
		WithContext(gateway.WithJob(ctx, gateway.JobCaller{ID: j.ID, Tenant: j.Tenant}))
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if req.Host == "" {
		req.Host = "tandem-jobs"
	}
	if len(rq.Body) == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set(HeaderJobID, j.ID)
	rec := &recorder{h: http.Header{}, max: m.cfg.MaxResult}
	func() {
		defer func() {
			if v := recover(); v != nil {
				m.log.Error("a job's attempt panicked in the gateway", "id", j.ID, "panic", v)
				rec.code = 0
			}
		}()
		m.handler.ServeHTTP(rec, req)
	}()
	if rec.code == 0 && !rec.wrote {
		return 0, &Result{Status: 0, Body: "the attempt was not answered"}
	}
	return rec.status(), newResult(rec.status(), rec.h, rec.body.Bytes(), rec.truncated)
}

// recorder is the ResponseWriter of a replay: it keeps the status, the
// headers and up to max bytes of the body.
type recorder struct {
	h         http.Header
	code      int
	wrote     bool
	body      bytes.Buffer
	max       int64
	truncated bool
}

func (r *recorder) Header() http.Header { return r.h }

func (r *recorder) WriteHeader(code int) {
	if r.wrote || code < 200 { // 1xx are interim
		return
	}
	r.code, r.wrote = code, true
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	if room := r.max - int64(r.body.Len()); int64(len(b)) > room {
		r.body.Write(b[:max(room, 0)])
		r.truncated = true
		return len(b), nil
	}
	return r.body.Write(b)
}

// Flush does nothing: the answer is kept whole.
func (r *recorder) Flush() {}

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

// deliver posts j's record to its destination, a few times with backoff,
// and records how it went. It returns early when ctx ends, leaving the
// destination pending: it is posted again after the next start.
func (m *Manager) deliver(ctx context.Context, j *Job) {
	dest, ok := strings.CutPrefix(j.Destination, "pending ")
	if !ok {
		return
	}
	body, _ := json.Marshal(j.view())
	var last string
	for try := 1; try <= destinationTries; try++ {
		if try > 1 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(Backoff(try-1, m.cfg.Backoff, m.cfg.MaxBackoff, mrand.Float64())):
			}
		}
		last = m.post(ctx, dest, j.ID, body)
		if ctx.Err() != nil {
			return
		}
		if last == "" {
			j.Destination = "delivered " + dest
			break
		}
	}
	if last != "" {
		j.Destination = fmt.Sprintf("failed %s: %s", dest, last)
		m.log.Warn("posting a job's record to its destination failed", "id", j.ID, "destination", dest, "err", last)
	}
	if err := m.put(j); err != nil {
		m.log.Error("recording a job's delivery failed", "id", j.ID, "err", err)
	}
}

// post sends one record; "" means the destination took it (2xx).
func (m *Manager) post(ctx context.Context, dest, id string, body []byte) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest, bytes.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderJobID, id)
	resp, err := m.cfg.Client.Do(req)
	if err != nil {
		return err.Error()
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "answered " + resp.Status
	}
	return ""
}

// pruneEvery deletes finished jobs older than the retention period.
func (m *Manager) pruneEvery(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := m.db.prune(m.cfg.Now().Add(-m.cfg.Retention)); err != nil {
			m.log.Error("pruning finished jobs failed", "err", err)
		} else if n > 0 {
			m.log.Info("pruned finished jobs past their retention", "jobs", n, "retention", m.cfg.Retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// due is a queued job's id and when its attempt is due.
type due struct {
	id string
	at time.Time
}

type dueHeap []due

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
