package cost

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"tandem/internal/manifest"
	"tandem/internal/store"
)

// Usage lives in dir/cost.db: a bucket "usage" holds one bucket per
// deployment, whose keys are a time bucket's start (8 bytes, big-endian
// unix seconds) followed by the mode, and whose values are Usage as JSON.
// Big-endian keys sort by time, so a report seeks to --since and reads on.
var bucketUsage = []byte("usage")

// DBFile is the meter's file under the data directory.
const DBFile = "cost.db"

// Open returns a meter that keeps usage durably in dir/cost.db (created
// when missing), priced with p (the defaults when nil). Usage already there
// stays in reports, so they survive restarts. Close it when done.
func Open(dir string, p *Prices, log *slog.Logger, now time.Time) (*Meter, error) {
	path := filepath.Join(dir, DBFile)
	// Checked whole at open (store.OpenDB): a damaged file is an error
	// naming it, not a panic in a later report.
	db, err := store.OpenDB(path, "usage history", func(db *bolt.DB) error {
		return store.EnsureBucket(db, bucketUsage)
	})
	if err != nil {
		return nil, fmt.Errorf("open cost meter: %w", err)
	}
	m := NewMeter(p, now)
	m.db = db
	if log != nil {
		m.log = log.With("component", "cost")
	}
	return m, nil
}

// Close accounts everything up to now, persists it and closes the file.
// Instances still running at now are counted up to now; if they still run
// when tandem starts again, their time from then on is counted again.
func (m *Meter) Close(now time.Time) error {
	if m == nil {
		return nil
	}
	m.Flush(now)
	err := m.Persist(now)
	if m.db != nil {
		err = errors.Join(err, m.db.Close())
	}
	return err
}

func encodeKey(start int64, mode manifest.Mode) []byte {
	k := make([]byte, 8, 8+len(mode))
	binary.BigEndian.PutUint64(k, uint64(start))
	return append(k, mode...)
}

func decodeKey(k []byte) (start int64, mode manifest.Mode, ok bool) {
	if len(k) < 8 {
		return 0, "", false
	}
	return int64(binary.BigEndian.Uint64(k)), manifest.Mode(k[8:]), true
}

// Persist writes the usage accounted since the last Persist to disk and
// drops usage older than the retention. Without a file (NewMeter) it only
// drops old usage from memory.
func (m *Meter) Persist(now time.Time) error {
	if m == nil {
		return nil
	}
	m.persistMu.Lock()
	defer m.persistMu.Unlock()
	cutoff := now.Add(-m.retention).Unix()
	m.mu.Lock()
	batch := m.pending
	if m.db == nil {
		for k := range batch {
			if k.start < cutoff {
				delete(batch, k)
			}
		}
		m.mu.Unlock()
		return nil
	}
	m.pending = map[bucketKey]*Usage{}
	m.mu.Unlock()

	err := m.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketUsage)
		for k, u := range batch {
			b, err := root.CreateBucketIfNotExists([]byte(k.model))
			if err != nil {
				return err
			}
			key := encodeKey(k.start, k.mode)
			sum := *u
			if old := b.Get(key); old != nil {
				var prev Usage
				if err := json.Unmarshal(old, &prev); err != nil {
					return fmt.Errorf("stored usage of %q: %w", k.model, err)
				}
				sum = prev.Plus(sum)
			}
			raw, err := json.Marshal(sum)
			if err != nil {
				return err
			}
			if err := b.Put(key, raw); err != nil {
				return err
			}
		}
		return root.ForEachBucket(func(name []byte) error {
			b := root.Bucket(name)
			var old [][]byte
			c := b.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if start, _, ok := decodeKey(k); !ok || start >= cutoff {
					break
				}
				old = append(old, k)
			}
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		// Keep the batch for the next try.
		m.mu.Lock()
		for k, u := range batch {
			if p := m.pending[k]; p != nil {
				*p = p.Plus(*u)
			} else {
				m.pending[k] = u
			}
		}
		m.mu.Unlock()
		return fmt.Errorf("persist usage: %w", err)
	}
	return nil
}

// record is one bucket of one deployment's usage.
type record struct {
	model string
	start time.Time
	usage Usage
}

// records returns every bucket of usage that starts in [since, until),
// for one model or all ("" ). The caller holds persistMu for reading.
func (m *Meter) records(model string, since, until time.Time) ([]record, error) {
	// Bucket starts are whole seconds: compare in nanoseconds, or a report
	// taken in the first second of a minute would miss that minute.
	in := func(start int64) bool {
		ns := start * int64(time.Second)
		return ns >= since.UnixNano() && ns < until.UnixNano()
	}
	var out []record
	m.mu.Lock()
	for k, u := range m.pending {
		if (model == "" || k.model == model) && in(k.start) {
			out = append(out, record{model: k.model, start: time.Unix(k.start, 0), usage: *u})
		}
	}
	m.mu.Unlock()
	if m.db == nil {
		return out, nil
	}
	err := m.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketUsage)
		read := func(name []byte) error {
			b := root.Bucket(name)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			for k, v := c.Seek(encodeKey(since.Unix(), "")); k != nil; k, v = c.Next() {
				start, mode, ok := decodeKey(k)
				if !ok || !in(start) {
					break
				}
				var u Usage
				if err := json.Unmarshal(v, &u); err != nil {
					return fmt.Errorf("stored usage of %q: %w", name, err)
				}
				u.Mode = mode
				out = append(out, record{model: string(name), start: time.Unix(start, 0), usage: u})
			}
			return nil
		}
		if model != "" {
			return read([]byte(model))
		}
		return root.ForEachBucket(read)
	})
	return out, err
}
