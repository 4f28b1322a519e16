package jobs

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"tandem/internal/store"
)

// File is the jobs' store under the data directory: its own file, so that
// their churn neither grows nor locks the deployments' tandem.db.
const File = "jobs.db"

var bucketJobs = []byte("jobs")

// ErrNotFound is returned for an unknown job id.
var ErrNotFound = errors.New("job not found")

// db keeps jobs by id. Ids sort by acceptance time, so a scan is in
// submission order.
type db struct {
	b   *bolt.DB
	log *slog.Logger
}

// openDB opens (creating) path and returns the jobs that were pending
// (queued or running) when it was last closed or crashed, and the finished
// ones whose destination was not posted yet. A record that
// does not decode is logged and skipped: one damaged job must not stop
// the others, nor tandem. A file bbolt cannot read is store.ErrDamaged.
func openDB(path string, log *slog.Logger) (*db, []*Job, []*Job, error) {
	d := &db{log: log}
	var pending, undelivered []*Job
	b, err := store.OpenDB(path, "asynchronous jobs", func(b *bolt.DB) error {
		if err := store.EnsureBucket(b, bucketJobs); err != nil {
			return err
		}
		d.b = b
		return d.scan(func(j *Job) bool {
			if !j.Status.Final() {
				pending = append(pending, j)
			} else if strings.HasPrefix(j.Destination, "pending ") {
				undelivered = append(undelivered, j)
			}
			return true
		})
	})
	if err != nil {
		return nil, nil, nil, err
	}
	// A commit (an fsync) costs about a millisecond or more; waiting 2ms
	// for other writers to share it keeps one caller's 202 quick and lets
	// a burst of submits share commits.
	b.MaxBatchDelay = 2 * time.Millisecond
	d.b = b
	return d, pending, undelivered, nil
}

func (d *db) close() error { return d.b.Close() }

// put commits j. Concurrent puts share one commit (bolt's Batch), so 200
// jobs accepted at once cost a few fsyncs, not 200; each call returns only
// once its job is on disk.
func (d *db) put(j *Job) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return d.b.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte(j.ID), raw)
	})
}

func (d *db) get(id string) (*Job, error) {
	var j Job
	err := d.b.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketJobs).Get([]byte(id))
		if raw == nil {
			return fmt.Errorf("%q: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return fmt.Errorf("stored job %q is damaged: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// scan hands every job that decodes to fn in id order, until fn returns
// false; damaged records are logged and skipped.
func (d *db) scan(fn func(*Job) bool) error {
	return d.b.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJobs).Cursor()
		for k, raw := c.First(); k != nil; k, raw = c.Next() {
			var j Job
			if err := json.Unmarshal(raw, &j); err != nil || j.ID != string(k) {
				d.log.Error("skipping a damaged job record in the store", "key", string(k), "err", err)
				continue
			}
			if !fn(&j) {
				return nil
			}
		}
		return nil
	})
}

// prune deletes final jobs last updated before cutoff, and returns how
// many. It decodes only each record's status and time (a record may hold
// megabytes of body). Damaged records are left for a person to look at.
func (d *db) prune(cutoff time.Time) (int, error) {
	var old [][]byte
	err := d.b.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, raw []byte) error {
			var j struct {
				Status    Status    `json:"status"`
				UpdatedAt time.Time `json:"updated_at"`
			}
			if json.Unmarshal(raw, &j) == nil && j.Status.Final() && j.UpdatedAt.Before(cutoff) {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
	})
	if err != nil || len(old) == 0 {
		return 0, err
	}
	err = d.b.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketJobs)
		for _, k := range old {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	return len(old), err
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
