package docker

// Tests against a real Docker engine (scripts/docker.sh install start). They
// skip loudly without one, and fail instead when CI is set.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"tandem/internal/backend"
	"tandem/internal/testbin"
)

func TestDocker_StartServesHealth(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, "")
	m := fakeManifest("health", nil)
	inst := startFake(t, b, "health-1", m)
	testbin.WaitHealthy(t, inst.Addr)

	if len(inst.Phases) != 2 || inst.Phases[0].Name != "create" || inst.Phases[1].Name != "start" {
		t.Errorf("phases %+v, want create, start", inst.Phases)
	}
	list, err := b.List(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != "health-1" || list[0].Addr != inst.Addr {
		t.Errorf("List = %+v, %v", list, err)
	}
	// The container carries tandem's labels.
	c := rawClient(t)
	insp, err := c.ContainerInspect(context.Background(), containerName(b.dataDir, "health-1"), client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := insp.Container.Config.Labels
	if l[backend.LabelManaged] != "true" || l[backend.LabelDeployment] != "health" ||
		l[backend.LabelRevision] != m.Hash() || l[backend.LabelInstance] != "health-1" || l[LabelDataDir] != b.dataDir {
		t.Errorf("labels %v", l)
	}
	// A second instance of the same deployment gets its own port.
	other := startFake(t, b, "health-2", m)
	testbin.WaitHealthy(t, other.Addr)
	if other.Addr == inst.Addr {
		t.Errorf("two instances on %s", inst.Addr)
	}
	// An id that runs cannot be started twice.
	if _, err := b.Start(context.Background(), testSpec("health-1", m)); !errors.Is(err, backend.ErrStartFailed) {
		t.Errorf("second Start of a running id: err = %v", err)
	}
}

func TestDocker_WaitCrash(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, "")
	inst := startFake(t, b, "crash-1", fakeManifest("crash", nil))
	testbin.WaitHealthy(t, inst.Addr)
	ch, err := b.Wait("crash-1")
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := httpClient.Post("http://"+inst.Addr+"/crash", "text/plain", nil); err == nil {
		resp.Body.Close()
	}
	e := exitWithin(t, ch, 30*time.Second)
	if e.Code != 2 || e.OOM || e.Signal != "" || e.Err != nil {
		t.Errorf("exit %+v, want code 2", e)
	}
	if _, ok := <-ch; ok {
		t.Error("Wait sent a second Exit")
	}
	// The ended container is removed, its last lines kept for logs.
	_, err = rawClient(t).ContainerInspect(context.Background(), containerName(b.dataDir, "crash-1"), client.ContainerInspectOptions{})
	if !cerrdefs.IsNotFound(err) {
		t.Errorf("crashed container still there: inspect err = %v", err)
	}
	var out bytes.Buffer
	if err := b.Logs(context.Background(), "crash", 0, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "crash-1 | fakemodel: crashing as asked\n") {
		t.Errorf("logs after crash:\n%s", out.String())
	}
	if list, _ := b.List(context.Background()); len(list) != 0 {
		t.Errorf("crashed instance still listed: %v", list)
	}
	// A replacement with the same id may start.
	inst = startFake(t, b, "crash-1", fakeManifest("crash", nil))
	testbin.WaitHealthy(t, inst.Addr)
}

func TestDocker_WaitExitAtOnce(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, "")
	startFake(t, b, "atonce-1", fakeManifest("atonce", map[string]string{"FAKE_EXIT_AT_ONCE": "3"}))
	ch, err := b.Wait("atonce-1")
	if err != nil {
		t.Fatal(err)
	}
	if e := exitWithin(t, ch, 30*time.Second); e.Code != 3 || e.Signal != "" {
		t.Errorf("exit %+v, want code 3", e)
	}
	var out bytes.Buffer
	b.Logs(context.Background(), "atonce", 0, &out)
	if !strings.Contains(out.String(), "atonce-1 | fakemodel: exiting at once as asked") {
		t.Errorf("logs:\n%s", out.String())
	}
}

func TestDocker_Stop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		env        map[string]string
		grace      time.Duration
		wantSignal string
	}{
		{"graceful", nil, 20 * time.Second, "terminated"},
		{"killed after grace", map[string]string{"FAKE_IGNORE_TERM": "1"}, 200 * time.Millisecond, "killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newTestBackend(t, "")
			id := "stop-" + strings.ReplaceAll(tt.name, " ", "-")
			inst := startFake(t, b, id, fakeManifest("stop", tt.env))
			testbin.WaitHealthy(t, inst.Addr)
			ch, _ := b.Wait(id)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := b.Stop(ctx, id, tt.grace); err != nil {
				t.Fatal(err)
			}
			// Stop returned: the exit is there and the container is gone.
			select {
			case e := <-ch:
				if e.Signal != tt.wantSignal || e.Code != -1 || e.OOM {
					t.Errorf("exit %+v, want killed by %s", e, tt.wantSignal)
				}
			default:
				t.Fatal("Stop returned before the instance ended")
			}
			_, err := rawClient(t).ContainerInspect(context.Background(), containerName(b.dataDir, id), client.ContainerInspectOptions{})
			if !cerrdefs.IsNotFound(err) {
				t.Errorf("stopped container still there: inspect err = %v", err)
			}
			if err := b.Stop(ctx, id, tt.grace); err != nil {
				t.Errorf("second Stop: %v", err)
			}
			if _, err := httpClient.Get("http://" + inst.Addr + "/health"); err == nil {
				t.Error("stopped instance still answers")
			}
		})
	}
}

func TestDocker_Recover(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b1 := newTestBackend(t, dir)
	m := fakeManifest("recover", nil)
	keep := startFake(t, b1, "recover-1", m)
	crashed := startFake(t, b1, "recover-2", m)
	testbin.WaitHealthy(t, keep.Addr)
	testbin.WaitHealthy(t, crashed.Addr)
	// Another tandem (another data dir) on the same engine.
	other := newTestBackend(t, "")
	otherInst := startFake(t, other, "recover-1", m)
	testbin.WaitHealthy(t, otherInst.Addr)

	// "Restart" tandem: stop tracking; meanwhile one container crashes.
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	if resp, err := httpClient.Post("http://"+crashed.Addr+"/crash", "text/plain", nil); err == nil {
		resp.Body.Close()
	}
	c := rawClient(t)
	crashedName := containerName(dir, "recover-2")
	waitCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := c.ContainerWait(waitCtx, crashedName, client.ContainerWaitOptions{Condition: "not-running"})
	select {
	case <-w.Result:
	case err := <-w.Error:
		t.Fatalf("waiting for the crash: %v", err)
	}

	b2 := newTestBackend(t, dir)
	got, err := b2.Recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "recover-1" || got[0].Addr != keep.Addr || got[0].Deployment != "recover" || got[0].Revision != m.Hash() {
		t.Fatalf("Recover = %+v, want recover-1 at %s", got, keep.Addr)
	}
	if _, err := c.ContainerInspect(context.Background(), crashedName, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("exited container not removed by Recover: %v", err)
	}
	if list, _ := other.List(context.Background()); len(list) != 1 {
		t.Errorf("the other tandem's instance was touched: %v", list)
	}
	testbin.WaitHealthy(t, got[0].Addr)
	if again, _ := b2.Recover(context.Background()); len(again) != 0 {
		t.Errorf("second Recover adopted again: %v", again)
	}
	var out bytes.Buffer
	if err := b2.Logs(context.Background(), "recover", 0, &out); err != nil || !strings.Contains(out.String(), "recover-1 | fakemodel: pid") {
		t.Errorf("logs of a recovered instance (%v):\n%s", err, out.String())
	}

	// Wait and Stop work on the recovered instance.
	ch, err := b2.Wait("recover-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Stop(context.Background(), "recover-1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if e := exitWithin(t, ch, 30*time.Second); e.Signal != "terminated" {
		t.Errorf("exit %+v, want SIGTERM", e)
	}
	testbin.WaitHealthy(t, otherInst.Addr)
}

func TestDocker_MemoryLimit(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, "")
	limited := fakeManifest("oom", nil)
	limited.Resources.Memory = 64 << 20
	inst := startFake(t, b, "oom-1", limited)
	bystander := startFake(t, b, "oom-2", fakeManifest("oom-bystander", nil))
	testbin.WaitHealthy(t, inst.Addr)
	testbin.WaitHealthy(t, bystander.Addr)
	ch, _ := b.Wait("oom-1")

	resp, err := httpClient.Get("http://" + inst.Addr + "/alloc?mb=256")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Errorf("allocating 256 MiB under a 64 MiB limit answered %d %q", resp.StatusCode, body)
	}
	e := exitWithin(t, ch, 30*time.Second)
	if !e.OOM {
		t.Errorf("exit %+v, want OOM", e)
	}
	if !strings.Contains(e.String(), "out of memory") {
		t.Errorf("exit says %q", e.String())
	}
	// The engine's "oom" event, which covers an exit not marked OOMKilled,
	// is found for this container.
	b.mu.Lock()
	in := b.insts["oom-1"]
	b.mu.Unlock()
	if !b.oomEvent(context.Background(), in) {
		t.Error("no oom event found for the killed container")
	}
	// The other instance keeps serving.
	resp, err = httpClient.Get("http://" + bystander.Addr + "/alloc?mb=16")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("bystander: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestDocker_StartMissingImage(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, "")
	m := fakeManifest("missing", nil)
	m.Runtime.Image = "tandem-does-not-exist:nope"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := b.Start(ctx, testSpec("missing-1", m))
	if !errors.Is(err, backend.ErrStartFailed) || !strings.Contains(err.Error(), "tandem-does-not-exist:nope") {
		t.Fatalf("err = %v, want ErrStartFailed naming the image", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Start hung until its deadline: %v", err)
	}
	t.Logf("Start error: %v", err)
	if list, _ := b.List(context.Background()); len(list) != 0 {
		t.Errorf("listed after a failed start: %v", list)
	}
}

// TestDocker_PublishedPort checks the default network mode. An engine
// without a bridge (--bridge=none, as here) cannot publish: Start must say
// so and leave nothing behind. An engine with one publishes on 127.0.0.1.
func TestDocker_PublishedPort(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, "")
	c := rawClient(t)
	_, bridgeErr := c.NetworkInspect(context.Background(), "bridge", client.NetworkInspectOptions{})
	m := fakeManifest("publish", nil)
	m.Runtime.Network = ""
	inst, err := b.Start(context.Background(), testSpec("publish-1", m))
	if cerrdefs.IsNotFound(bridgeErr) {
		if !errors.Is(err, backend.ErrStartFailed) || !strings.Contains(err.Error(), "runtime.network: host") {
			t.Fatalf("err = %v, want ErrStartFailed advising host networking", err)
		}
		t.Logf("Start error: %v", err)
		_, ierr := c.ContainerInspect(context.Background(), containerName(b.dataDir, "publish-1"), client.ContainerInspectOptions{})
		if !cerrdefs.IsNotFound(ierr) {
			t.Errorf("container left behind: %v", ierr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(context.Background(), "publish-1", time.Second)
	if !strings.HasPrefix(inst.Addr, "127.0.0.1:") || inst.Addr == "127.0.0.1:8080" {
		t.Errorf("addr %q, want 127.0.0.1:<published port>", inst.Addr)
	}
}

func TestDocker_Logs(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, "")
	m := fakeManifest("logs", nil)
	a := startFake(t, b, "logs-1", m)
	testbin.WaitHealthy(t, a.Addr)
	c := startFake(t, b, "logs-2", m)
	testbin.WaitHealthy(t, c.Addr)
	// The engine's log driver writes a line down a moment after the
	// program printed it: an instance can answer its health check before
	// its first line is in its log. Read until both are there (bounded).
	var out bytes.Buffer
	var lines []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out.Reset()
		if err := b.Logs(context.Background(), "logs", 1, &out); err != nil {
			t.Fatal(err)
		}
		lines = strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "logs-1 | fakemodel: pid") || !strings.HasPrefix(lines[1], "logs-2 | fakemodel: pid") {
		t.Errorf("logs, oldest instance first:\n%s", out.String())
	}
	out.Reset()
	if err := b.Logs(context.Background(), "nope", 0, &out); err != nil || out.Len() != 0 {
		t.Errorf("logs of an unknown deployment: %q %v", out.String(), err)
	}
}

func TestDocker_New_Unavailable(t *testing.T) {
	t.Parallel()
	_, err := New(Config{DataDir: t.TempDir(), Host: "unix:///nonexistent/docker.sock"})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("err = %v, want ErrUnavailable", err)
	}
}
