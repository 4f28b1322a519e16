package docker

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

func testManifest(mut func(m *manifest.Manifest)) *manifest.Manifest {
	m := &manifest.Manifest{Name: "m", Backend: manifest.BackendDocker,
		Runtime: manifest.Runtime{Image: "img:1", Network: "host", Health: "/health"}}
	if mut != nil {
		mut(m)
	}
	m.SetDefaults()
	return m
}

func testSpec(id string, m *manifest.Manifest) backend.Spec {
	return backend.Spec{ID: id, Deployment: m.Name, Revision: m.Hash(), Manifest: m}
}

func TestMakePlan(t *testing.T) {
	tests := []struct {
		name    string
		mut     func(m *manifest.Manifest)
		env     map[string]string
		nvidia  bool
		wantErr string
		check   func(t *testing.T, p plan)
	}{
		{
			name: "host network passes the free port",
			check: func(t *testing.T, p plan) {
				hc, cfg := p.create.HostConfig, p.create.Config
				if hc.NetworkMode != "host" || p.addr != "127.0.0.1:40001" {
					t.Errorf("network %q addr %q", hc.NetworkMode, p.addr)
				}
				if !slices.Contains(cfg.Env, "PORT=40001") || cfg.Labels[LabelHostPort] != "40001" {
					t.Errorf("env %v labels %v", cfg.Env, cfg.Labels)
				}
				if len(hc.PortBindings) != 0 {
					t.Errorf("host network publishes %v", hc.PortBindings)
				}
			},
		},
		{
			name: "host network with a fixed port",
			mut:  func(m *manifest.Manifest) { m.Runtime.Port = 5000 },
			check: func(t *testing.T, p plan) {
				if p.addr != "127.0.0.1:5000" || !slices.Contains(p.create.Config.Env, "PORT=5000") {
					t.Errorf("addr %q env %v", p.addr, p.create.Config.Env)
				}
			},
		},
		{
			name: "default publishes the container port on loopback",
			mut:  func(m *manifest.Manifest) { m.Runtime.Network = "" },
			check: func(t *testing.T, p plan) {
				cp := network.MustParsePort("8080/tcp")
				hc := p.create.HostConfig
				if p.addr != "" || p.port != cp {
					t.Errorf("addr %q port %v", p.addr, p.port)
				}
				if b := hc.PortBindings[cp]; len(b) != 1 || b[0].HostIP != loopback || b[0].HostPort != "" {
					t.Errorf("bindings %v", hc.PortBindings)
				}
				if _, ok := p.create.Config.ExposedPorts[cp]; !ok || !slices.Contains(p.create.Config.Env, "PORT=8080") {
					t.Errorf("exposed %v env %v", p.create.Config.ExposedPorts, p.create.Config.Env)
				}
				if hc.NetworkMode != "" {
					t.Errorf("network mode %q", hc.NetworkMode)
				}
			},
		},
		{
			name: "published runtime.port",
			mut:  func(m *manifest.Manifest) { m.Runtime.Network = ""; m.Runtime.Port = 5000 },
			check: func(t *testing.T, p plan) {
				if p.port != network.MustParsePort("5000/tcp") || !slices.Contains(p.create.Config.Env, "PORT=5000") {
					t.Errorf("port %v env %v", p.port, p.create.Config.Env)
				}
			},
		},
		{
			name: "labels, name, command, args and env",
			mut: func(m *manifest.Manifest) {
				m.Runtime.Command = []string{"/bin/server", "-v"}
				m.Runtime.Args = []string{"--model", "x"}
				m.Runtime.Env = map[string]string{"A": "manifest", "B": "manifest", "PORT": "1"}
			},
			env: map[string]string{"B": "tandem"},
			check: func(t *testing.T, p plan) {
				cfg := p.create.Config
				if !slices.Equal(cfg.Entrypoint, []string{"/bin/server", "-v"}) || !slices.Equal(cfg.Cmd, []string{"--model", "x"}) {
					t.Errorf("entrypoint %v cmd %v", cfg.Entrypoint, cfg.Cmd)
				}
				if want := []string{"A=manifest", "B=tandem", "PORT=40001"}; !slices.Equal(cfg.Env, want) {
					t.Errorf("env %v, want %v", cfg.Env, want)
				}
				l := cfg.Labels
				if l[backend.LabelManaged] != "true" || l[backend.LabelDeployment] != "m" || l[backend.LabelInstance] != "m-1" ||
					l[backend.LabelRevision] == "" || l[LabelDataDir] != "/data" {
					t.Errorf("labels %v", l)
				}
				if p.create.Name != containerName("/data", "m-1") || !strings.HasPrefix(p.create.Name, "tandem-") {
					t.Errorf("name %q", p.create.Name)
				}
				if p.create.Image != "img:1" {
					t.Errorf("image %q", p.create.Image)
				}
				if hc := p.create.HostConfig; hc.Init == nil || !*hc.Init {
					t.Error("no init process: a PID 1 program may ignore SIGTERM")
				}
			},
		},
		{
			name: "no command keeps the image's entrypoint and cmd",
			check: func(t *testing.T, p plan) {
				if p.create.Config.Entrypoint != nil || p.create.Config.Cmd != nil {
					t.Errorf("entrypoint %v cmd %v", p.create.Config.Entrypoint, p.create.Config.Cmd)
				}
			},
		},
		{
			name: "memory and cpu limits",
			mut:  func(m *manifest.Manifest) { m.Resources.Memory = 64 << 20; m.Resources.CPU = 0.5 },
			check: func(t *testing.T, p plan) {
				hc := p.create.HostConfig
				if hc.Memory != 64<<20 || hc.MemorySwap != 64<<20 || hc.NanoCPUs != 5e8 {
					t.Errorf("memory %d swap %d nanocpus %d", hc.Memory, hc.MemorySwap, hc.NanoCPUs)
				}
				if len(hc.DeviceRequests) != 0 {
					t.Errorf("device requests %v", hc.DeviceRequests)
				}
			},
		},
		{
			name:   "gpus with an nvidia runtime",
			mut:    func(m *manifest.Manifest) { m.Resources.GPUs = 2 },
			nvidia: true,
			check: func(t *testing.T, p plan) {
				dr := p.create.HostConfig.DeviceRequests
				if len(dr) != 1 || dr[0].Count != 2 || len(dr[0].Capabilities) != 1 || !slices.Equal(dr[0].Capabilities[0], []string{"gpu"}) {
					t.Errorf("device requests %+v", dr)
				}
			},
		},
		{
			name:    "gpus without an nvidia runtime",
			mut:     func(m *manifest.Manifest) { m.Resources.GPUs = 1 },
			wantErr: "no NVIDIA runtime",
		},
		{
			name:    "no image",
			mut:     func(m *manifest.Manifest) { m.Runtime.Image = ""; m.Runtime.Command = []string{"x"} },
			wantErr: "runtime.image is required",
		},
		{
			name:    "unknown network",
			mut:     func(m *manifest.Manifest) { m.Runtime.Network = "bridge" },
			wantErr: "not a network mode",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec("m-1", testManifest(tt.mut))
			spec.Env = tt.env
			p, err := makePlan(spec, "/data", 40001, tt.nvidia)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to say %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, p)
		})
	}
}

func TestContainerName(t *testing.T) {
	a, b := containerName("/data/a", "x/1 y"), containerName("/data/b", "x/1 y")
	if a == b {
		t.Errorf("two data dirs give one name %q", a)
	}
	if strings.ContainsAny(a, "/ ") {
		t.Errorf("name %q has characters the engine refuses", a)
	}
}

func TestExitOf(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		st   container.State
		want backend.Exit
	}{
		{"clean exit", container.State{ExitCode: 0}, backend.Exit{Code: 0, At: at}},
		{"exit code", container.State{ExitCode: 3}, backend.Exit{Code: 3, At: at}},
		{"sigterm", container.State{ExitCode: 143}, backend.Exit{Code: -1, Signal: "terminated", At: at}},
		{"sigkill", container.State{ExitCode: 137}, backend.Exit{Code: -1, Signal: "killed", At: at}},
		{"oom", container.State{ExitCode: 137, OOMKilled: true}, backend.Exit{Code: -1, Signal: "killed", OOM: true, At: at}},
		{"finished at", container.State{ExitCode: 1, FinishedAt: "2025-02-03T04:05:06.5Z"},
			backend.Exit{Code: 1, At: time.Date(2025, 2, 3, 4, 5, 6, 5e8, time.UTC)}},
		{"zero finished at", container.State{ExitCode: 1, FinishedAt: "0001-01-01T00:00:00Z"}, backend.Exit{Code: 1, At: at}},
		{"code past signals", container.State{ExitCode: 255}, backend.Exit{Code: 255, At: at}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := exitOf(tt.st, at)
			if got != tt.want {
				t.Errorf("exitOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPrefixWriter_Write(t *testing.T) {
	var out bytes.Buffer
	w := &prefixWriter{w: &out, prefix: "i-1 | "}
	for _, s := range []string{"one\ntw", "o\n", "", "three"} {
		w.Write([]byte(s))
	}
	w.Flush()
	if want := "i-1 | one\ni-1 | two\ni-1 | three\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

func TestLineRing_Write(t *testing.T) {
	r := &lineRing{max: 2}
	r.Write([]byte("a\nb\nc"))
	r.Write([]byte("d\ne"))
	var got []string
	for _, l := range r.Lines() {
		got = append(got, string(l))
	}
	if want := []string{"cd\n", "e\n"}; !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
}

func newFakeBackend(t *testing.T, f *fakeEngine) *Backend {
	t.Helper()
	b, err := newBackend(Config{DataDir: "/data"}, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// waitExit waits for an instance's exit, failing the test after 10s.
func waitExit(t *testing.T, b backend.Backend, id string) backend.Exit {
	t.Helper()
	ch, err := b.Wait(id)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatalf("Wait(%s) closed without an Exit", id)
		}
		if _, more := <-ch; more {
			t.Fatalf("Wait(%s) sent twice", id)
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit of %s", id)
	}
	return backend.Exit{}
}

func TestNew_Unavailable(t *testing.T) {
	f := newFakeEngine()
	f.infoErr = errors.New("connection refused")
	if _, err := newBackend(Config{DataDir: "/data"}, f); !errors.Is(err, ErrUnavailable) {
		t.Errorf("err = %v, want ErrUnavailable", err)
	}
	if _, err := newBackend(Config{}, newFakeEngine()); err == nil {
		t.Error("no error without a data dir")
	}
}

func TestBackend_Start(t *testing.T) {
	tests := []struct {
		name      string
		mut       func(m *manifest.Manifest)
		setup     func(f *fakeEngine)
		wantErr   string
		wantCalls []string // prefixes, in order
	}{
		{
			name:      "host network",
			wantCalls: []string{"create", "start"},
		},
		{
			name:      "published port",
			mut:       func(m *manifest.Manifest) { m.Runtime.Network = "" },
			wantCalls: []string{"create", "start"},
		},
		{
			name:      "missing image",
			mut:       func(m *manifest.Manifest) { m.Runtime.Image = "nope:1" },
			wantErr:   `image "nope:1" not found`,
			wantCalls: []string{"create"},
		},
		{
			name:      "start fails: container removed",
			setup:     func(f *fakeEngine) { f.startErr = errors.New("exec: no such file") },
			wantErr:   "no such file",
			wantCalls: []string{"create", "start", "remove"},
		},
		{
			name:      "command found on PATH",
			mut:       func(m *manifest.Manifest) { m.Runtime.Command = []string{"server"} },
			wantCalls: []string{"create", "stat", "stat", "stat", "stat", "start"},
		},
		{
			name:      "absolute command",
			mut:       func(m *manifest.Manifest) { m.Runtime.Command = []string{"/app/run.sh"} },
			wantCalls: []string{"create", "stat", "start"},
		},
		{
			name:      "missing command: container removed",
			mut:       func(m *manifest.Manifest) { m.Runtime.Command = []string{"nope-server"} },
			wantErr:   `"nope-server" not found in image "img:1" (looked in PATH /usr/local/sbin:`,
			wantCalls: []string{"create", "stat", "stat", "stat", "stat", "stat", "stat", "remove"},
		},
		{
			name:      "nothing published: container removed",
			mut:       func(m *manifest.Manifest) { m.Runtime.Network = "" },
			setup:     func(f *fakeEngine) { f.noPublish = true },
			wantErr:   "runtime.network: host",
			wantCalls: []string{"create", "start", "remove"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEngine("img:1")
			f.files = map[string]bool{"/usr/bin/server": true, "/app/run.sh": true}
			if tt.setup != nil {
				tt.setup(f)
			}
			b := newFakeBackend(t, f)
			inst, err := b.Start(context.Background(), testSpec("m-1", testManifest(tt.mut)))
			var got []string
			for _, c := range f.Calls() {
				got = append(got, strings.Fields(c)[0])
			}
			if !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls %v, want %v", f.Calls(), tt.wantCalls)
			}
			if tt.wantErr != "" {
				if !errors.Is(err, backend.ErrStartFailed) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrStartFailed saying %q", err, tt.wantErr)
				}
				if l, _ := b.List(context.Background()); len(l) != 0 {
					t.Errorf("a failed start is listed: %v", l)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if inst.ID != "m-1" || inst.Deployment != "m" || inst.Addr == "" {
				t.Errorf("instance %+v", inst)
			}
			if len(inst.Phases) != 2 || inst.Phases[0].Name != "create" || inst.Phases[1].Name != "start" {
				t.Errorf("phases %+v", inst.Phases)
			}
			if l, _ := b.List(context.Background()); len(l) != 1 || l[0].ID != "m-1" {
				t.Errorf("List = %+v", l)
			}
			if _, err := b.Start(context.Background(), testSpec("m-1", testManifest(tt.mut))); !errors.Is(err, backend.ErrStartFailed) {
				t.Errorf("second start of a running id: err = %v", err)
			}
			// The program was found once: another instance of the image
			// starts without looking again.
			n := len(f.Calls())
			if _, err := b.Start(context.Background(), testSpec("m-2", testManifest(tt.mut))); err != nil {
				t.Fatal(err)
			}
			for _, c := range f.Calls()[n:] {
				if strings.HasPrefix(c, "stat") {
					t.Errorf("second instance looked for its program again: %v", f.Calls()[n:])
				}
			}
		})
	}
}

func TestBackend_Wait(t *testing.T) {
	f := newFakeEngine("img:1")
	b := newFakeBackend(t, f)
	if _, err := b.Wait("nope"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Wait(unknown) err = %v", err)
	}
	spec := testSpec("m-1", testManifest(nil))
	if _, err := b.Start(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	c := f.byName(containerName("/data", "m-1"))
	f.log(c.id, 1, "serving\n")
	f.log(c.id, 2, "out of memory\n")
	early, _ := b.Wait("m-1")
	f.exit(c.id, 137, true)
	for _, e := range []backend.Exit{<-early, waitExit(t, b, "m-1")} {
		if !e.OOM || e.Code != -1 {
			t.Errorf("exit %+v, want OOM", e)
		}
	}
	if !c.removed {
		t.Error("ended container not removed")
	}
	if l, _ := b.List(context.Background()); len(l) != 0 {
		t.Errorf("ended instance listed: %v", l)
	}
	var out bytes.Buffer
	if err := b.Logs(context.Background(), "m", 0, &out); err != nil {
		t.Fatal(err)
	}
	if want := "m-1 | serving\nm-1 | out of memory\n"; out.String() != want {
		t.Errorf("logs %q, want %q", out.String(), want)
	}
	if err := b.Stop(context.Background(), "m-1", time.Second); err != nil {
		t.Errorf("Stop of an ended instance: %v", err)
	}
}

// TestBackend_Wait_lateOOM covers Docker 20.10 reporting an OOM kill
// without OOMKilled when containerd's events arrive out of order.
func TestBackend_Wait_lateOOM(t *testing.T) {
	tests := []struct {
		name       string
		memory     manifest.ByteSize
		oomEvent   bool
		wantOOM    bool
		wantEvents bool
	}{
		{"late oom event", 64 << 20, true, true, true},
		{"killed, no oom event", 64 << 20, false, false, true},
		{"no memory limit", 0, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEngine("img:1")
			b := newFakeBackend(t, f)
			m := testManifest(func(m *manifest.Manifest) { m.Resources.Memory = tt.memory })
			if _, err := b.Start(context.Background(), testSpec("m-1", m)); err != nil {
				t.Fatal(err)
			}
			c := f.byName(containerName("/data", "m-1"))
			f.oomEvents = map[string]bool{c.id: tt.oomEvent}
			f.exit(c.id, 137, false)
			e := waitExit(t, b, "m-1")
			if e.OOM != tt.wantOOM || e.Signal != "killed" {
				t.Errorf("exit %+v, want OOM %v", e, tt.wantOOM)
			}
			if asked := slices.Contains(f.Calls(), "events"); asked != tt.wantEvents {
				t.Errorf("asked for events: %v, want %v (calls %v)", asked, tt.wantEvents, f.Calls())
			}
		})
	}
}

func TestBackend_Stop(t *testing.T) {
	tests := []struct {
		name       string
		ignoreStop bool
		grace      time.Duration
		wantSignal string
		wantCalls  []string
	}{
		{"graceful", false, 1500 * time.Millisecond, "terminated", []string{"stop c t=2", "remove"}},
		{"killed after grace", true, 10 * time.Millisecond, "killed", []string{"stop c t=1", "kill c SIGKILL", "remove"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEngine("img:1")
			f.ignoreStop = tt.ignoreStop
			b := newFakeBackend(t, f)
			if _, err := b.Start(context.Background(), testSpec("m-1", testManifest(nil))); err != nil {
				t.Fatal(err)
			}
			if err := b.Stop(context.Background(), "m-1", tt.grace); err != nil {
				t.Fatal(err)
			}
			if e := waitExit(t, b, "m-1"); e.Signal != tt.wantSignal {
				t.Errorf("exit %+v, want signal %s", e, tt.wantSignal)
			}
			var got []string
			for _, c := range f.Calls()[2:] {
				got = append(got, strings.Replace(c, "c000", "c", 1))
			}
			for i, want := range tt.wantCalls {
				if i >= len(got) || !strings.HasPrefix(got[i], want) {
					t.Fatalf("calls after start %v, want %v", got, tt.wantCalls)
				}
			}
			if err := b.Stop(context.Background(), "nope", time.Second); err != nil {
				t.Errorf("Stop(unknown) err = %v, want nil", err)
			}
		})
	}
}

func TestBackend_Recover(t *testing.T) {
	f := newFakeEngine("img:1")
	labels := func(id, dir string, port string) map[string]string {
		return map[string]string{backend.LabelManaged: "true", backend.LabelInstance: id, backend.LabelDeployment: "m",
			backend.LabelRevision: "r1", LabelDataDir: dir, LabelHostPort: port}
	}
	running := f.add(labels("m-1", "/data", "41000"), container.StateRunning)
	exited := f.add(labels("m-2", "/data", "41001"), container.StateExited)
	badPort := f.add(labels("m-3", "/data", "x"), container.StateRunning)
	other := f.add(labels("m-4", "/other", "41002"), container.StateRunning)

	b := newFakeBackend(t, f)
	got, err := b.Recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "m-1" || got[0].Addr != "127.0.0.1:41000" || got[0].Revision != "r1" {
		t.Fatalf("Recover = %+v, want m-1 on 127.0.0.1:41000", got)
	}
	for id, wantRemoved := range map[string]bool{running: false, exited: true, badPort: true, other: false} {
		if f.containers[id].removed != wantRemoved {
			t.Errorf("container %s removed = %v, want %v", f.containers[id].opts.Config.Labels[backend.LabelInstance], !wantRemoved, wantRemoved)
		}
	}
	if again, _ := b.Recover(context.Background()); len(again) != 0 {
		t.Errorf("second Recover adopted %v again", again)
	}
	if err := b.Stop(context.Background(), "m-1", time.Second); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, b, "m-1"); e.Signal != "terminated" {
		t.Errorf("exit %+v", e)
	}
}

func TestBackend_Close(t *testing.T) {
	f := newFakeEngine("img:1")
	b := newFakeBackend(t, f)
	if _, err := b.Start(context.Background(), testSpec("m-1", testManifest(nil))); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if c := f.byName(containerName("/data", "m-1")); c == nil || c.state != container.StateRunning {
		t.Error("Close stopped the container")
	}
	if _, err := b.Start(context.Background(), testSpec("m-2", testManifest(nil))); !errors.Is(err, backend.ErrStartFailed) || !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: err = %v", err)
	}
}
