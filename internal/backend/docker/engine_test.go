package docker

// Helpers for the tests that run against a real Docker engine.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"

	"tandem/internal/backend"
	"tandem/internal/manifest"
	"tandem/internal/testbin"
)

// FakemodelImage is the image of cmd/fakemodel the tests build (FROM
// scratch, a static binary); scripts/docker.sh images builds the same.
const FakemodelImage = "tandem-fakemodel:test"

var (
	engineOnce sync.Once
	engineErr  error
	imageOnce  sync.Once
	imageErr   error
)

// inCI reports whether the tests run in CI, where nothing may be skipped.
func inCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// rawClient returns a client for checks the backend does not offer.
func rawClient(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(client.WithAPIVersion(APIVersion), client.WithHostFromEnv())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// requireEngine skips the test, loudly, when no Docker engine answers,
// unless CI is set: then it fails. It builds the fakemodel image once.
func requireEngine(t testing.TB) {
	t.Helper()
	engineOnce.Do(func() {
		c, err := client.New(client.WithAPIVersion(APIVersion), client.WithHostFromEnv())
		if err != nil {
			engineErr = err
			return
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, engineErr = c.Ping(ctx, client.PingOptions{})
	})
	if engineErr != nil {
		msg := fmt.Sprintf("no Docker engine (%v): run `bash scripts/docker.sh install start images`", engineErr)
		if inCI() {
			t.Fatalf("CI is set and %s", msg)
		}
		t.Skipf("SKIPPED, NOT TESTED: %s", msg)
	}
	imageOnce.Do(func() { imageErr = buildFakemodelImage(testbin.RepoRoot(t)) })
	if imageErr != nil {
		t.Fatalf("building %s: %v", FakemodelImage, imageErr)
	}
}

// buildFakemodelImage builds cmd/fakemodel statically and the image from
// images/fakemodel/Dockerfile, through the engine's build API.
func buildFakemodelImage(root string) error {
	dir, err := os.MkdirTemp("", "tandem-fakemodel-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "fakemodel")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/fakemodel")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	for _, f := range []struct{ name, path string }{
		{"Dockerfile", filepath.Join(root, "images", "fakemodel", "Dockerfile")},
		{"fakemodel", bin},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o755, Size: int64(len(b))}); err != nil {
			return err
		}
		tw.Write(b)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	c, err := client.New(client.WithAPIVersion(APIVersion), client.WithHostFromEnv())
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := c.ImageBuild(ctx, &ctxTar, client.ImageBuildOptions{
		Tags: []string{FakemodelImage}, Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		return err
	}
	defer res.Body.Close()
	// The build reports failure in its stream, not its status.
	dec := json.NewDecoder(res.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

// newTestBackend returns a real backend on a fresh data directory (or dir,
// when given), closed at the end of the test.
func newTestBackend(t *testing.T, dir string) *Backend {
	t.Helper()
	requireEngine(t)
	if dir == "" {
		dir = t.TempDir()
	}
	b, err := New(Config{DataDir: dir, Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// fakeManifest is a host-network manifest of the fakemodel image.
func fakeManifest(name string, env map[string]string) *manifest.Manifest {
	m := &manifest.Manifest{Name: name, Backend: manifest.BackendDocker, Runtime: manifest.Runtime{
		Image: FakemodelImage, Network: "host", Health: "/health", Env: env,
	}}
	m.SetDefaults()
	if err := m.Validate(); err != nil {
		panic(err)
	}
	return m
}

// startFake starts an instance of the fakemodel image and stops it (with a
// short grace) at the end of the test.
func startFake(t *testing.T, b *Backend, id string, m *manifest.Manifest) backend.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inst, err := b.Start(ctx, testSpec(id, m))
	if err != nil {
		t.Fatalf("Start(%s): %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b.Stop(ctx, id, 100*time.Millisecond)
	})
	return inst
}

// testLogger drops the backend's log lines; tests assert on behaviour.
var testLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

var httpClient = &http.Client{Timeout: 10 * time.Second}

// exitWithin waits for an exit on ch, failing the test after d.
func exitWithin(t *testing.T, ch <-chan backend.Exit, d time.Duration) backend.Exit {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("Wait channel closed without an Exit")
		}
		return e
	case <-time.After(d):
		t.Fatalf("no Exit within %s", d)
	}
	return backend.Exit{}
}
