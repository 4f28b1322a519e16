package store_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"tandem/internal/manifest"
	"tandem/internal/store"
)

// realStore writes n deployments through the package API into a new
// store, closes it and returns its file.
func realStore(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := &manifest.Manifest{Name: fmt.Sprintf("model-%04d", i), Mode: manifest.Serverless,
			Runtime: manifest.Runtime{Command: []string{"serve", "--model", fmt.Sprintf("/models/%d.onnx", i)}}}
		m.SetDefaults()
		if err := s.Put(&store.Record{Manifest: m, CreatedAt: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, store.File)
}

// damagedCopy copies the store at src into a new folder, lets damage edit
// the copy's bytes, and returns the folder.
func damagedCopy(t *testing.T, src string, damage func([]byte) []byte) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, store.File), damage(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// wantDamaged checks that err is a clear ErrDamaged naming the file and
// what to do.
func wantDamaged(t *testing.T, err error, dir string) {
	t.Helper()
	if !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("Open = %v, want ErrDamaged", err)
	}
	for _, want := range []string{filepath.Join(dir, store.File), "backup", "move it aside"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestOpen_Damaged checks that damaged copies of a real store fail to open
// with ErrDamaged (never a panic, never an empty start).
func TestOpen_Damaged(t *testing.T) {
	src := realStore(t, 200)
	page := os.Getpagesize()
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"empty", func(b []byte) []byte { return nil }},
		{"zeroed", func(b []byte) []byte { return make([]byte, len(b)) }},
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }},
		{"truncated inside the meta pages", func(b []byte) []byte { return b[:page+100] }},
		{"both meta pages overwritten", func(b []byte) []byte {
			r := rand.New(rand.NewPCG(1, 2))
			for i := range 2 * page {
				b[i] = byte(r.Uint32())
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := damagedCopy(t, src, tc.damage)
			s, err := store.Open(dir)
			if err == nil {
				s.Close()
			}
			wantDamaged(t, err, dir)
		})
	}
}

// TestOpen_RandomPage overwrites each page past the meta pages of a real
// store with random bytes, one copy per page: each copy either fails with
// ErrDamaged or (a page bbolt does not use) opens with every record intact.
func TestOpen_RandomPage(t *testing.T) {
	const n = 200
	src := realStore(t, n)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	r := rand.New(rand.NewPCG(3, 4))
	failed := 0
	for p := 2; p < len(data)/page; p++ {
		dir := damagedCopy(t, src, func(b []byte) []byte {
			for i := p * page; i < (p+1)*page; i++ {
				b[i] = byte(r.Uint32())
			}
			return b
		})
		s, err := store.Open(dir)
		if err != nil {
			wantDamaged(t, err, dir)
			failed++
			continue
		}
		recs, err := s.List()
		s.Close()
		if err != nil || len(recs) != n {
			t.Errorf("page %d damaged: opened, then List = %d records, %v; want %d", p, len(recs), err, n)
		}
	}
	if failed == 0 {
		t.Error("no damaged page was noticed")
	}
	t.Logf("%d of %d damaged pages refused at open", failed, len(data)/page-2)
}

// TestOpen_Intact checks that a real store survives the checks.
func TestOpen_Intact(t *testing.T) {
	src := realStore(t, 50)
	s, err := store.Open(filepath.Dir(src))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if recs, err := s.List(); err != nil || len(recs) != 50 {
		t.Fatalf("List = %d, %v; want 50", len(recs), err)
	}
}

// BenchmarkOpen_1000 measures opening a store of 1,000 deployments: bare
// bbolt, bbolt with tx.Check, and store.Open (the check, then every record
// read and decoded).
func BenchmarkOpen_1000(b *testing.B) {
	src := realStore(b, 1000)
	open := func(b *testing.B, check bool) {
		for b.Loop() {
			db, err := bolt.Open(src, 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			if check {
				db.View(func(tx *bolt.Tx) error {
					for err := range tx.Check() {
						b.Fatal(err)
					}
					return nil
				})
			}
			db.Close()
		}
	}
	b.Run("bolt", func(b *testing.B) { open(b, false) })
	b.Run("bolt+check", func(b *testing.B) { open(b, true) })
	b.Run("store", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s, err := store.Open(filepath.Dir(src))
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	})
}
