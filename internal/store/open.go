package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is wrapped by the error of OpenDB (and so Open) for a file
// that bbolt cannot safely read: empty, truncated, or with pages that do
// not hold together.
var ErrDamaged = errors.New("damaged")

// OpenDB opens (creating) the bbolt file at path and checks it whole
// before anyone reads it, so that a damaged file is a clear error naming
// it instead of a panic deep in bbolt later. holds says what the file
// keeps ("deployments", "usage history"), for the advice in the error.
// load, when not nil, runs next under the same guard (creating buckets,
// reading records): its error is returned as damage too.
//
// The check reads every page (tx.Check): about 1ms for a store of 1,000
// deployments, paid once at start. An existing file of 0 bytes is damaged
// too, never taken for a fresh start. bbolt panics, or faults on its
// memory map, on some damage even during the check; both become
// ErrDamaged here.
func OpenDB(path, holds string, load func(*bolt.DB) error) (db *bolt.DB, err error) {
	fi, statErr := os.Stat(path)
	if statErr == nil && fi.Size() == 0 {
		return nil, damaged(path, holds, errors.New("empty file, 0 bytes"))
	}
	// A truncated file faults on the memory map; make that a panic to
	// recover from rather than a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			// Not closed: bbolt's state is unknown after a panic. The
			// caller is expected to exit; the file lock goes with it.
			db = nil
			if errors.Is(err, fs.ErrPermission) {
				return
			}
			err = damaged(path, holds, fmt.Errorf("bbolt: %v", r))
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	switch {
	case err == nil:
	case errors.Is(err, bolt.ErrTimeout):
		return nil, fmt.Errorf("%s is locked: is another tandem serving this --data-dir?", path)
	case statErr != nil || errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("open %s: %w", path, err)
	default:
		return nil, damaged(path, holds, err)
	}
	cerr := check(db)
	if cerr == nil && load != nil {
		cerr = load(db)
	}
	if cerr != nil {
		db.Close()
		return nil, damaged(path, holds, cerr)
	}
	return db, nil
}

// check runs bbolt's consistency check over every page and returns the
// first few problems it finds.
func check(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			if len(errs) < 3 {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

func damaged(path, holds string, cause error) error {
	return fmt.Errorf("%s is %w (%v); tandem will not start on it. Restore it from a backup, or move it aside (mv %s %s.damaged) to start without its %s",
		path, ErrDamaged, cause, path, path, holds)
}

// EnsureBucket creates the top-level bucket name unless it exists. It
// writes (and syncs) only when it must, which keeps an open cheap.
func EnsureBucket(db *bolt.DB, name []byte) error {
	exists := false
	_ = db.View(func(tx *bolt.Tx) error {
		exists = tx.Bucket(name) != nil
		return nil
	})
	if exists {
		return nil
	}
	return db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(name)
		return err
	})
}
