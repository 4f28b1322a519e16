package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of what a Queue keeps on the server.
const (
	StreamName = "TANDEM_JOBS"
	subject    = "tandem.jobs"
	bucketName = "tandem_jobs"
	consumer   = "tandem-runners"
)

// ErrNotFound means no record has that id.
var ErrNotFound = errors.New("jetstream: no such record")

// QueueConfig describes a connection to a JetStream server.
type QueueConfig struct {
	URL   string
	Token string
	// AckWait is how long a delivery may run without InProgress before the
	// server hands it to another runner (a replica that died holds nothing
	// longer than this). Default 30s.
	AckWait time.Duration
	// Retention keeps finished records this long (the bucket's TTL);
	// default 24h.
	Retention time.Duration
	// Replicas of the stream and bucket (1 on a single server).
	Replicas int
}

// Queue is a work queue of ids plus a key-value bucket of records, on
// JetStream: every record put is kept (durably, once the server
// acknowledged it); every id enqueued is delivered to one runner at a
// time until a runner acknowledges it, and to another one when the first
// stops without doing so (at-least-once).
type Queue struct {
	ackWait time.Duration
	nc      *nats.Conn
	kv      jetstream.KeyValue
	cons    jetstream.Consumer
	js      jetstream.JetStream
}

// Open connects and creates the stream, consumer and bucket when missing.
func Open(ctx context.Context, cfg QueueConfig) (*Queue, error) {
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	opts := []nats.Option{nats.Name("tandem"), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond)}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("jetstream: connecting to %s: %w", cfg.URL, err)
	}
	q := &Queue{nc: nc, ackWait: cfg.AckWait}
	if err := q.setup(ctx, cfg); err != nil {
		nc.Close()
		return nil, err
	}
	return q, nil
}

func (q *Queue) setup(ctx context.Context, cfg QueueConfig) error {
	js, err := jetstream.New(q.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	q.js = js
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       StreamName,
		Subjects:   []string{subject},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   cfg.Replicas,
		Duplicates: 10 * time.Minute, // an id enqueued twice (a retried submit) runs once
	})
	if err != nil {
		return fmt.Errorf("jetstream: stream %s: %w", StreamName, err)
	}
	q.cons, err = st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1, // the job's own record counts attempts
		MaxAckPending: 10000,
	})
	if err != nil {
		return fmt.Errorf("jetstream: consumer %s: %w", consumer, err)
	}
	q.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   bucketName,
		TTL:      cfg.Retention,
		Storage:  jetstream.FileStorage,
		Replicas: cfg.Replicas,
		History:  1,
	})
	if err != nil {
		return fmt.Errorf("jetstream: bucket %s: %w", bucketName, err)
	}
	return nil
}

// AckWait is how long a delivery is held without Working before the
// server hands it to another runner.
func (q *Queue) AckWait() time.Duration { return q.ackWait }

// Close disconnects.
func (q *Queue) Close() { q.nc.Close() }

// Put stores a record under id, replacing what was there.
func (q *Queue) Put(ctx context.Context, id string, rec []byte) error {
	_, err := q.kv.Put(ctx, id, rec)
	return err
}

// Get returns the record of id, or ErrNotFound.
func (q *Queue) Get(ctx context.Context, id string) ([]byte, error) {
	e, err := q.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

// Delete forgets the record of id.
func (q *Queue) Delete(ctx context.Context, id string) error {
	err := q.kv.Purge(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// Each calls fn for every record kept.
func (q *Queue) Each(ctx context.Context, fn func(id string, rec []byte) error) error {
	lister, err := q.kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	defer lister.Stop()
	for id := range lister.Keys() {
		rec, err := q.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // pruned meanwhile
		}
		if err != nil {
			return err
		}
		if err := fn(id, rec); err != nil {
			return err
		}
	}
	return nil
}

// Enqueue asks for id to be delivered to a runner. Enqueueing an id again
// within ten minutes is a no-op (the server deduplicates by id).
func (q *Queue) Enqueue(ctx context.Context, id string) error {
	_, err := q.js.Publish(ctx, subject, []byte(id), jetstream.WithMsgID(id))
	return err
}

// Delivery is an id handed to this runner; it must end with Done, Later
// or be left to time out.
type Delivery struct {
	ID  string
	msg jetstream.Msg
}

// Done says the id needs no more runs.
func (d *Delivery) Done() error { return d.msg.Ack() }

// Later hands the id back to be delivered again after delay (a retry).
func (d *Delivery) Later(delay time.Duration) error { return d.msg.NakWithDelay(delay) }

// Working extends the time this runner holds the delivery.
func (d *Delivery) Working() error { return d.msg.InProgress() }

// Next returns up to max deliveries: those waiting now, else the first
// that arrives within wait; none when ctx ends or wait passes. It never
// holds a delivery back waiting for more (a batch held past the ack wait
// would be handed to another runner meanwhile).
func (q *Queue) Next(ctx context.Context, max int, wait time.Duration) ([]*Delivery, error) {
	batch, err := q.cons.FetchNoWait(max)
	if err != nil {
		return nil, err
	}
	out, err := collect(batch)
	if len(out) > 0 || err != nil {
		return out, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	batch, err = q.cons.Fetch(1, jetstream.FetchContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	out, err = collect(batch)
	if ctx.Err() != nil {
		err = nil
	}
	return out, err
}

func collect(batch jetstream.MessageBatch) ([]*Delivery, error) {
	var out []*Delivery
	for m := range batch.Messages() {
		out = append(out, &Delivery{ID: string(m.Data()), msg: m})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return out, err
	}
	return out, nil
}
