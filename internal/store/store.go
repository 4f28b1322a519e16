// Package store keeps deployments durably in an embedded bbolt database
// under the data directory. It is called by the control plane on deploy,
// delete and start, never on the request path.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"tandem/internal/manifest"
)

var bucketDeployments = []byte("deployments")

// ErrNotFound is returned for an unknown deployment.
var ErrNotFound = errors.New("deployment not found")

// Record is one stored deployment.
type Record struct {
	Manifest  *manifest.Manifest `json:"manifest"`
	CreatedAt time.Time          `json:"created_at"`
	UpdatedAt time.Time          `json:"updated_at"`
	// Metadata is what the runtime reported about the model at deploy time
	// (for ONNX models: inputs and outputs), answered without waking it.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// Unit and Meter are the platform and cost-meter keys of the revision
	// unit that runs it, when not the manifest's name (a canary promoted
	// in place keeps its own; see controller/traffic.go).
	Unit  string `json:"unit,omitempty"`
	Meter string `json:"meter,omitempty"`
}

// Store is safe for concurrent use.
type Store struct{ db *bolt.DB }

// File is the store's file under the data directory.
const File = "tandem.db"

// Open opens (creating) dir/tandem.db. A second tandem on the same data
// directory fails here instead of corrupting state. A damaged file (see
// OpenDB; a record that does not decode counts) fails with ErrDamaged.
func Open(dir string) (*Store, error) {
	path := filepath.Join(dir, File)
	s := &Store{}
	db, err := OpenDB(path, "deployments", func(db *bolt.DB) error {
		if err := EnsureBucket(db, bucketDeployments); err != nil {
			return err
		}
		// Every record is read now, so that a damaged one stops the start
		// instead of silently dropping a deployment.
		s.db = db
		_, err := s.List()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.db = db
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Put creates or replaces a deployment.
func (s *Store) Put(r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDeployments).Put([]byte(r.Manifest.Name), b)
	})
}

// Get returns one deployment.
func (s *Store) Get(name string) (*Record, error) {
	var r Record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDeployments).Get([]byte(name))
		if b == nil {
			return fmt.Errorf("%q: %w", name, ErrNotFound)
		}
		return json.Unmarshal(b, &r)
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Delete removes a deployment; deleting an unknown one is ErrNotFound.
func (s *Store) Delete(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketDeployments)
		if bk.Get([]byte(name)) == nil {
			return fmt.Errorf("%q: %w", name, ErrNotFound)
		}
		return bk.Delete([]byte(name))
	})
}

// List returns every deployment, ordered by name.
func (s *Store) List() ([]*Record, error) {
	var out []*Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDeployments).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("stored deployment %q: %w", k, err)
			}
			out = append(out, &r)
			return nil
		})
	})
	return out, err
}
