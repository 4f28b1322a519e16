package python

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/manifest"
)

const pidApp = `import os

def app(environ, start_response):
    body = ("%d %d" % (os.getpid(), os.getppid())).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
`

// fakeMeter records the template events.
type fakeMeter struct {
	mu             sync.Mutex
	started, ended int
}

func (m *fakeMeter) TemplateStarted(string, time.Time) { m.mu.Lock(); m.started++; m.mu.Unlock() }
func (m *fakeMeter) TemplateEnded(string, time.Time)   { m.mu.Lock(); m.ended++; m.mu.Unlock() }
func (m *fakeMeter) counts() (int, int)                { m.mu.Lock(); defer m.mu.Unlock(); return m.started, m.ended }

func templateSpec(t *testing.T, id, dir, bootstrapPath string, keep time.Duration) backend.Spec {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed: %v", err)
	}
	m := &manifest.Manifest{Name: "tpl", Runtime: manifest.Runtime{
		WSGI: "pidapp:app", Workdir: dir, Template: &manifest.Template{Keep: manifest.Duration(keep)},
		Command: []string{py, bootstrapPath, "wsgi", "pidapp:app"},
		Env:     map[string]string{"PYTHONDONTWRITEBYTECODE": "1"},
	}}
	return backend.Spec{ID: id, Deployment: "tpl", Revision: "r1", Manifest: m, Env: map[string]string{"TANDEM_X": id}}
}

func get(t *testing.T, addr string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func phaseNames(in backend.Instance) string {
	var n []string
	for _, p := range in.Phases {
		n = append(n, p.Name)
	}
	return strings.Join(n, ",")
}

// TestTemplates_Lifecycle: the first start starts the template, the next
// is a fork only; Stop ends the instance and not the template; a template
// unused for keep ends, and the next start starts a new one; Close ends
// everything; the meter hears each template's start and end.
func TestTemplates_Lifecycle(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pidapp.py"), []byte(pidApp), 0o644); err != nil {
		t.Fatal(err)
	}
	bs, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	meter := &fakeMeter{}
	b := Wrap(fake.New(http.NotFoundHandler()), TemplateConfig{DataDir: t.TempDir(), Meter: meter})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	keep := 1500 * time.Millisecond

	in1, err := b.Start(ctx, templateSpec(t, "i1", dir, bs, keep))
	if err != nil {
		t.Fatal(err)
	}
	if got := phaseNames(in1); got != "template,fork" {
		t.Fatalf("first start's phases %q, want template,fork", got)
	}
	var pid1, tpl int
	fmt.Sscanf(get(t, in1.Addr), "%d %d", &pid1, &tpl)
	in2, err := b.Start(ctx, templateSpec(t, "i2", dir, bs, keep))
	if err != nil {
		t.Fatal(err)
	}
	if got := phaseNames(in2); got != "fork" {
		t.Fatalf("second start's phases %q, want fork", got)
	}
	var pid2, tpl2 int
	fmt.Sscanf(get(t, in2.Addr), "%d %d", &pid2, &tpl2)
	if tpl2 != tpl || pid2 == pid1 {
		t.Fatalf("instances %d (of %d) and %d (of %d): want two forks of one template", pid1, tpl, pid2, tpl2)
	}
	if n := b.Templates()["tpl"]; n != 1 {
		t.Fatalf("templates: %d", n)
	}
	list, _ := b.List(ctx)
	if len(list) != 2 {
		t.Fatalf("List: %+v", list)
	}
	w1, _ := b.Wait("i1")
	if err := b.Stop(ctx, "i1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if ex := <-w1; ex.Signal != "terminated" {
		t.Fatalf("stopped instance's exit: %v", ex)
	}
	if get(t, in2.Addr) == "" {
		t.Fatal("the other instance stopped answering")
	}
	// A template with an instance is kept past keep; without, it ends.
	time.Sleep(keep + 500*time.Millisecond)
	if n := b.Templates()["tpl"]; n != 1 {
		t.Fatalf("the template ended under a live instance")
	}
	w2, _ := b.Wait("i2")
	if err := b.Stop(ctx, "i2", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	<-w2
	deadline := time.Now().Add(keep + 10*time.Second)
	for b.Templates()["tpl"] != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the template did not end after keep without a fork")
		}
		time.Sleep(20 * time.Millisecond)
	}
	in3, err := b.Start(ctx, templateSpec(t, "i3", dir, bs, keep))
	if err != nil {
		t.Fatal(err)
	}
	if got := phaseNames(in3); got != "template,fork" {
		t.Fatalf("start after the template ended: phases %q, want a full one", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	w3, _ := b.Wait("i3")
	if ex := <-w3; ex.Err == nil && ex.Signal == "" {
		t.Fatalf("i3 after Close: %v", ex)
	}
	// The template's end is reported once it has exited, which can come
	// after its instance's (poll: a bound against hangs, not a timing).
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s, e := meter.counts()
		if s == 2 && e == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("meter heard %d starts and %d ends, want 2 and 2", s, e)
		}
	}
	for _, pid := range []int{pid1, pid2, tpl} {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z") {
				t.Errorf("process %d still runs", pid)
			}
		}
	}
}

// TestTemplates_TemplateCrash: a template killed with kill -9 takes its
// instances with it (each gets an Exit saying so, none is left running),
// and the next start starts a new template.
func TestTemplates_TemplateCrash(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pidapp.py"), []byte(pidApp), 0o644); err != nil {
		t.Fatal(err)
	}
	bs, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := Wrap(fake.New(http.NotFoundHandler()), TemplateConfig{DataDir: t.TempDir()})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in1, err := b.Start(ctx, templateSpec(t, "c1", dir, bs, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var pid, tpl int
	fmt.Sscanf(get(t, in1.Addr), "%d %d", &pid, &tpl)
	w, _ := b.Wait("c1")
	if err := syscall.Kill(tpl, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-w:
		if ex.Err == nil || !strings.Contains(ex.Err.Error(), "template ended") {
			t.Fatalf("instance's exit: %v", ex)
		}
	case <-ctx.Done():
		t.Fatal("no exit for the instance of a crashed template")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %d outlived its template", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	in2, err := b.Start(ctx, templateSpec(t, "c2", dir, bs, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got := phaseNames(in2); got != "template,fork" {
		t.Fatalf("start after the crash: phases %q, want a new template", got)
	}
	var pid2, tpl2 int
	fmt.Sscanf(get(t, in2.Addr), "%d %d", &pid2, &tpl2)
	if tpl2 == tpl {
		t.Fatal("the crashed template served the next start")
	}
}
