package cost

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/internal/store"
)

// TestOpen_Damaged checks that damaged copies of a real cost.db fail to
// open with store.ErrDamaged naming the file, never a panic.
func TestOpen_Damaged(t *testing.T) {
	src := t.TempDir()
	m, err := Open(src, nil, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	day(t, m, func(now time.Time) {})
	if err := m.Close(at("24h")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(src, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	if len(data) < 4*page {
		t.Fatalf("cost.db of a day is %d bytes, want a few pages", len(data))
	}
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"empty", func(b []byte) []byte { return nil }},
		{"zeroed", func(b []byte) []byte { return make([]byte, len(b)) }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"a page overwritten", func(b []byte) []byte {
			// Every page but the two meta pages.
			for i := 2 * page; i < len(b); i++ {
				b[i] = byte(i*7 + 3)
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, DBFile), tc.damage(append([]byte(nil), data...)), 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := Open(dir, nil, nil, at("24h"))
			if err == nil {
				m.Close(at("24h"))
				t.Fatal("Open of a damaged cost.db succeeded")
			}
			if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), filepath.Join(dir, DBFile)) {
				t.Fatalf("Open = %v, want store.ErrDamaged naming the file", err)
			}
		})
	}
}
