package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"tandem/internal/jetstream"
)

// storeTimeout bounds one call to the shared queue's server.
const storeTimeout = 10 * time.Second

// put records j: in jobs.db, or in the shared queue's bucket.
func (m *Manager) put(j *Job) error {
	if m.q == nil {
		return m.db.put(j)
	}
	raw, err := json.Marshal(j)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	return m.q.Put(ctx, j.ID, raw)
}

func (m *Manager) get(id string) (*Job, error) {
	if m.q == nil {
		return m.db.get(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	raw, err := m.q.Get(ctx, id)
	if errors.Is(err, jetstream.ErrNotFound) {
		return nil, fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var j Job
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("stored job %q is damaged: %w", id, err)
	}
	return &j, nil
}

// scan hands every job that decodes to fn until it returns false; damaged
// records are logged and skipped.
func (m *Manager) scan(fn func(*Job) bool) error {
	if m.q == nil {
		return m.db.scan(fn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var list []*Job
	err := m.q.Each(ctx, func(id string, raw []byte) error {
		var j Job
		if err := json.Unmarshal(raw, &j); err != nil || j.ID != id {
			m.log.Error("skipping a damaged job record in the shared queue", "key", id, "err", err)
			return nil
		}
		list = append(list, &j)
		return nil
	})
	// The bucket lists keys in no set order; ids sort by acceptance.
	sortByID(list)
	for _, j := range list {
		if !fn(j) {
			break
		}
	}
	return err
}

// dispatchShared takes deliveries from the shared queue while this
// replica has room for attempts, and runs each.
func (m *Manager) dispatchShared(ctx context.Context) {
	slots := make(chan struct{}, m.cfg.PerModel)
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		free := 1 // the slot just taken, plus whatever else is free
		for len(slots) < cap(slots) {
			slots <- struct{}{}
			free++
		}
		ds, err := m.q.Next(ctx, free, 5*time.Second)
		if err != nil && ctx.Err() == nil {
			m.log.Warn("taking jobs from the shared queue failed", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		for range free - len(ds) {
			<-slots
		}
		for _, d := range ds {
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				defer func() { <-slots }()
				m.attemptShared(ctx, d)
			}()
		}
	}
}

// attemptShared runs one delivery of the shared queue: the job's next
// attempt, then Done when it ended (and its destination was posted),
// Later when it is to be retried. A replica that dies meanwhile never
// answers the delivery, and the server gives it to another replica once
// its ack wait passes: the job's record still says running, and the other
// replica makes the next attempt.
func (m *Manager) attemptShared(ctx context.Context, d *jetstream.Delivery) {
	j, err := m.get(d.ID)
	if errors.Is(err, ErrNotFound) {
		d.Done() // pruned, or never accepted
		return
	}
	if err != nil {
		m.log.Error("a job in the shared queue cannot be read; trying later", "id", d.ID, "err", err)
		d.Later(time.Minute)
		return
	}
	if !j.Status.Final() {
		now := m.cfg.Now()
		if j.Status == Queued && j.NextAt.After(now) {
			d.Later(j.NextAt.Sub(now)) // delivered early
			return
		}
		stop := m.keepAlive(d)
		retryAt, interrupted := m.step(ctx, j)
		stop()
		switch {
		case interrupted:
			d.Later(0) // stopping: another replica takes it now
			return
		case !retryAt.IsZero():
			d.Later(time.Until(retryAt))
			return
		}
	}
	if m.deliverable(j) {
		stop := m.keepAlive(d)
		m.deliver(ctx, j)
		stop()
		if ctx.Err() != nil {
			d.Later(0)
			return
		}
	}
	if err := d.Done(); err != nil {
		m.log.Warn("acknowledging a finished job failed; it may be delivered again", "id", j.ID, "err", err)
	}
}

// keepAlive tells the server, three times per ack wait, that d is still
// being worked on, until stop is called.
func (m *Manager) keepAlive(d *jetstream.Delivery) (stop func()) {
	done := make(chan struct{})
	t := time.NewTicker(max(m.q.AckWait()/3, 10*time.Millisecond))
	go func() {
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				d.Working()
			}
		}
	}()
	return func() { close(done) }
}
