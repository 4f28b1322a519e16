package controller_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/manifest"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// picky is the fake backend refusing runtime.args (backend.Checker).
type picky struct{ *fake.Backend }

func (picky) Check(m *manifest.Manifest) error {
	if len(m.Runtime.Args) > 0 {
		return &manifest.Error{Problems: []manifest.Problem{{Field: "runtime.args", Message: "the picky backend takes none"}}}
	}
	return nil
}

// A field the backend cannot honour is refused at deploy: 400
// invalid_manifest naming the field, and nothing is deployed.
func TestController_ApplyChecksFields(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := controller.New(controller.Config{Store: st, DefaultBackend: "process", Tick: 20 * time.Millisecond,
		Backends: map[string]backend.Backend{"process": picky{fake.New(http.NotFoundHandler())}}})
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	_, err = c.Apply(ctx, parse(t, "name: a\nruntime: {command: [x], args: [--v]}\n"))
	var pe *problem.Error
	if !errors.As(err, &pe) || pe.Status != http.StatusBadRequest || pe.Code != "invalid_manifest" || pe.Field != "runtime.args" {
		t.Fatalf("Apply = %v, want 400 invalid_manifest on runtime.args", err)
	}
	if probs, ok := pe.Details.([]manifest.Problem); !ok || len(probs) != 1 {
		t.Errorf("details %#v, want the backend's one problem", pe.Details)
	}
	if _, ok := c.Lookup("a"); ok {
		t.Error("a refused manifest was deployed")
	}
	if _, err := c.Apply(ctx, parse(t, "name: a\nruntime: {command: [x]}\n")); err != nil {
		t.Fatalf("Apply without the field: %v", err)
	}
}
