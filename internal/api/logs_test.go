package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tandem/internal/api"
	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/store"
)

// follower is the fake backend with followable logs: it writes "first",
// then one line per Say, until its context ends; Ended reports that end.
type follower struct {
	*fake.Backend
	say   chan string
	ended chan struct{}
}

func (f *follower) FollowLogs(ctx context.Context, deployment string, tail int, w io.Writer, flush func()) error {
	defer func() { f.ended <- struct{}{} }()
	fmt.Fprintf(w, "%s-1 | first (tail %d)\n", deployment, tail)
	flush()
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-f.say:
			if _, err := fmt.Fprintf(w, "%s-1 | %s\n", deployment, s); err != nil {
				return nil
			}
			flush()
		}
	}
}

// followServer is a control API over a controller with the deployments
// "m" (on a backend that follows logs) and "plain" (on one that does not).
func followServer(t *testing.T) (*api.Client, *follower, *controller.Controller) {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	f := &follower{Backend: fake.New(ok), say: make(chan string), ended: make(chan struct{}, 4)}
	c := controller.New(controller.Config{Store: st, DefaultBackend: "process", Tick: 20 * time.Millisecond,
		Backends: map[string]backend.Backend{"process": f, "docker": fake.New(ok)}})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	for _, y := range []string{
		"name: m\nmode: serverless\nruntime: {command: [x]}\n",
		"name: plain\nmode: serverless\nbackend: docker\nruntime: {image: x}\n",
	} {
		m, err := manifest.Parse([]byte(y), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Apply(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(api.NewServer(c, metrics.New(), api.Info{}, slog.New(slog.DiscardHandler)))
	t.Cleanup(hs.Close)
	return api.NewClient(hs.URL), f, c
}

// lineWriter hands each write to the test.
type lineWriter chan string

func (l lineWriter) Write(p []byte) (int, error) { l <- string(p); return len(p), nil }

func next(t *testing.T, lines lineWriter) string {
	t.Helper()
	select {
	case s := <-lines:
		return s
	case <-time.After(20 * time.Second): // a bound against hangs
		t.Fatal("no line streamed")
		return ""
	}
}

func waitEnded(t *testing.T, f *follower) {
	t.Helper()
	select {
	case <-f.ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the backend's FollowLogs did not end with the request")
	}
}

func TestServer_followLogs(t *testing.T) {
	cl, f, _ := followServer(t)

	t.Run("lines as written, until the client goes away", func(t *testing.T) {
		lines := make(lineWriter, 8)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- cl.FollowLogs(ctx, "m", 7, lines) }()
		if s := next(t, lines); s != "m-1 | first (tail 7)\n" {
			t.Fatalf("first line %q", s)
		}
		f.say <- "later"
		if s := next(t, lines); s != "m-1 | later\n" {
			t.Fatalf("streamed %q", s)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("FollowLogs after cancel = %v, want nil", err)
		}
		waitEnded(t, f)
	})

	t.Run("until the deployment is deleted", func(t *testing.T) {
		lines := make(lineWriter, 8)
		done := make(chan error, 1)
		go func() { done <- cl.FollowLogs(context.Background(), "m", 0, lines) }()
		next(t, lines)
		if err := cl.Delete(context.Background(), "m"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("FollowLogs after delete = %v, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the stream did not end when the deployment was deleted")
		}
		waitEnded(t, f)
	})
}

func TestServer_followLogs_errors(t *testing.T) {
	cl, _, _ := followServer(t)
	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"unknown deployment", "/v1/deployments/nope/logs?follow=1", 404, "model_not_found"},
		{"backend that cannot follow", "/v1/deployments/plain/logs?follow=1", 501, "cannot_follow"},
		{"bad follow", "/v1/deployments/plain/logs?follow=maybe", 400, "invalid_query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(cl.Base + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.Contains(string(body), `"`+tt.code+`"`) {
				t.Errorf("GET %s = %d %s, want %d %s", tt.path, resp.StatusCode, body, tt.status, tt.code)
			}
		})
	}
	err := cl.FollowLogs(context.Background(), "plain", 0, io.Discard)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 501 {
		t.Errorf("FollowLogs of a backend that cannot follow = %v, want a 501", err)
	}
}
