package gateway

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/manifest"
	"tandem/internal/store"
)

// BenchmarkAcquireWithin is what the deadline check adds to taking a
// warm instance: plain acquire, acquireWithin without a deadline (what
// every request pays), and with an X-Tandem-Deadline in the context.
//
//	go test -run '^$' -bench AcquireWithin -benchtime 200000x ./internal/gateway/
func BenchmarkAcquireWithin(b *testing.B) {
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	fb := fake.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb}, DefaultBackend: "process"})
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer c.Shutdown(context.Background())
	m, _ := manifest.Parse([]byte("name: m\nmode: dedicated\nruntime: {command: [x]}\n"), "")
	if _, err := c.Apply(context.Background(), m); err != nil {
		b.Fatal(err)
	}
	d, _ := c.Lookup("m")
	for len(d.Pool.Ready()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	g := New(c, nil)
	plain := context.Background()
	withHeader := context.WithValue(plain, deadlineKey{}, &headerDeadline{d: time.Second})
	for _, bc := range []struct {
		name string
		run  func() error
	}{
		{"acquire", func() error {
			l, err := acquire(plain, d.Pool)
			if err == nil {
				l.Release()
			}
			return err
		}},
		{"within/no-deadline", func() error {
			l, _, err := g.acquireWithin(plain, d)
			if err == nil {
				l.Release()
			}
			return err
		}},
		{"within/header", func() error {
			l, _, err := g.acquireWithin(withHeader, d)
			if err == nil {
				l.Release()
			}
			return err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
