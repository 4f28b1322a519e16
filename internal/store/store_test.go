package store

import (
	"errors"
	"testing"
	"time"

	"tandem/internal/manifest"
)

func TestStore_PutGetListDelete(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "iris", Mode: manifest.Serverless, Runtime: manifest.Runtime{Command: []string{"x"}}}
	m.SetDefaults()
	if err := s.Put(&Record{Manifest: m, CreatedAt: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	// A second open of the same directory must fail clearly, not corrupt.
	if _, err := Open(dir); err == nil {
		t.Fatal("second Open of a locked store succeeded")
	}
	s.Close()

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get("iris")
	if err != nil {
		t.Fatal(err)
	}
	if got.Manifest.Hash() != m.Hash() {
		t.Fatalf("manifest changed across reopen: %+v", got.Manifest)
	}
	list, _ := s.List()
	if len(list) != 1 {
		t.Fatalf("List = %d records, want 1", len(list))
	}
	if err := s.Delete("iris"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("iris"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if err := s.Delete("iris"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v, want ErrNotFound", err)
	}
}
