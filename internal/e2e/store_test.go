package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/internal/cost"
	"tandem/internal/manifest"
	"tandem/internal/store"
	"tandem/internal/testbin"
)

// TestServe_DamagedStore runs tandem serve over data directories whose
// tandem.db or cost.db is damaged: it must exit non-zero at once, name the
// file, and not panic.
func TestServe_DamagedStore(t *testing.T) {
	bin := testbin.Build(t, "tandem/cmd/tandem")
	page := os.Getpagesize()
	scramble := func(b []byte) []byte {
		r := rand.New(rand.NewPCG(5, 6))
		for i := 2 * page; i < len(b); i++ {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	for _, tc := range []struct {
		name, file string
		damage     func([]byte) []byte
	}{
		{"tandem.db pages scrambled", store.File, scramble},
		{"tandem.db empty", store.File, func([]byte) []byte { return nil }},
		{"tandem.db truncated", store.File, func(b []byte) []byte { return b[:len(b)/2] }},
		{"cost.db pages scrambled", cost.DBFile, scramble},
		{"cost.db empty", cost.DBFile, func([]byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := realDataDir(t)
			path := filepath.Join(dir, tc.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
				"--grpc-listen", "127.0.0.1:0", "--data-dir", dir)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("tandem serve kept running over a damaged %s:\n%s", tc.file, out)
			}
			if err == nil {
				t.Fatalf("tandem serve exited 0 over a damaged %s:\n%s", tc.file, out)
			}
			for _, bad := range []string{"panic:", "goroutine "} {
				if strings.Contains(string(out), bad) {
					t.Errorf("output holds %q:\n%s", bad, out)
				}
			}
			if !strings.Contains(string(out), path) || !strings.Contains(string(out), "damaged") {
				t.Errorf("output does not say that %s is damaged:\n%s", path, out)
			}
		})
	}
}

// realDataDir returns a data directory with a tandem.db of a few
// deployments and a cost.db of a day's usage, written through the
// packages' own APIs.
func realDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		m := &manifest.Manifest{Name: fmt.Sprintf("model-%d", i), Runtime: manifest.Runtime{Command: []string{"/nonexistent/model"}}}
		m.SetDefaults()
		if err := s.Put(&store.Record{Manifest: m, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-24 * time.Hour).Truncate(time.Hour)
	mt, err := cost.Open(dir, nil, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		m := &manifest.Manifest{Name: fmt.Sprintf("model-%d", i), Runtime: manifest.Runtime{Command: []string{"x"}}}
		m.SetDefaults()
		mt.Deployment(m, t0)
		mt.InstanceStarting(m.Name, m.Name+"-1", t0)
	}
	for h := range 24 {
		mt.Flush(t0.Add(time.Duration(h) * time.Hour))
	}
	if err := mt.Close(t0.Add(24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	return dir
}
