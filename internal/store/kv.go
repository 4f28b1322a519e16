package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// PutJSON stores v as JSON under key in bucket (created on first use), for
// other parts of tandem that keep small records beside the deployments
// (tenants, API keys).
func (s *Store) PutJSON(bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		return bk.Put([]byte(key), b)
	})
}

// DeleteJSON removes key from bucket; a missing key or bucket is no error.
func (s *Store) DeleteJSON(bucket, key string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if bk := tx.Bucket([]byte(bucket)); bk != nil {
			return bk.Delete([]byte(key))
		}
		return nil
	})
}

// ForEachJSON decodes every record of bucket into a new value from mk and
// hands it to fn, in key order. A record that does not decode is an error
// that names it.
func (s *Store) ForEachJSON(bucket string, mk func() any, fn func(key string, v any) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, raw []byte) error {
			v := mk()
			if err := json.Unmarshal(raw, v); err != nil {
				return fmt.Errorf("stored %s record %q: %w", bucket, k, err)
			}
			return fn(string(k), v)
		})
	})
}

// GetJSON decodes the record key of bucket into v and reports whether
// there was one; a record that does not decode is an error that names it.
func (s *Store) GetJSON(bucket, key string, v any) (bool, error) {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		raw := bk.Get([]byte(key))
		if raw == nil {
			return nil
		}
		found = true
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("stored %s record %q: %w", bucket, key, err)
		}
		return nil
	})
	return found, err
}
