package controller_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/store"
)

// TestController_ApplyMaxInstances checks that scaling.max is bounded by
// the server's MaxInstances, 256 when unset.
func TestController_ApplyMaxInstances(t *testing.T) {
	for _, tc := range []struct {
		name    string
		limit   int
		max     string
		wantErr bool
	}{
		{"default allows 256", 0, "256", false},
		{"default refuses 100000", 0, "100000", true},
		{"set limit allows it", 8, "8", false},
		{"set limit refuses more", 8, "9", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			c := controller.New(controller.Config{Store: st,
				Backends:       map[string]backend.Backend{"process": fake.New(http.NotFoundHandler())},
				DefaultBackend: "process", Tick: 20 * time.Millisecond, MaxInstances: tc.limit})
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Shutdown(context.Background()) })
			m := parse(t, "name: a\nruntime: {command: [x]}\nscaling: {max: "+tc.max+"}\n")
			_, err = c.Apply(context.Background(), m)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Apply accepted it")
			}
			for _, want := range []string{"scaling.max", tc.max, "--max-instances"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			if recs, _ := st.List(); len(recs) != 0 {
				t.Errorf("refused deployment stored: %d records", len(recs))
			}
		})
	}
}
