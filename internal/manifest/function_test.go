package manifest

import (
	"strings"
	"testing"
)

func TestValidate_Functions(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantField string
	}{
		{"go function", "name: f\nruntime:\n  lambda:\n    command: [./bootstrap]\n", ""},
		{"python handler", "name: f\nruntime:\n  lambda:\n    handler: app.lambda_handler\n    event: apigw-v2\n  template: {keep: 10m}\n", ""},
		{"wsgi", "name: f\nruntime:\n  wsgi: app:app\n  template: {}\n", ""},
		{"neither", "name: f\nruntime:\n  lambda: {event: apigw-v1}\n", "runtime.lambda"},
		{"both", "name: f\nruntime:\n  lambda: {command: [x], handler: a.b}\n", "runtime.lambda"},
		{"bad handler", "name: f\nruntime:\n  lambda: {handler: app}\n", "runtime.lambda.handler"},
		{"bad event", "name: f\nruntime:\n  lambda: {handler: a.b, event: sqs}\n", "runtime.lambda.event"},
		{"bad wsgi", "name: f\nruntime:\n  wsgi: app.app\n", "runtime.wsgi"},
		{"two sources", "name: f\nruntime:\n  wsgi: app:app\n  command: [x]\n", "runtime"},
		{"template of a program", "name: f\nruntime:\n  lambda: {command: [./bootstrap]}\n  template: {}\n", "runtime.template"},
		{"docker", "name: f\nbackend: docker\nruntime:\n  wsgi: app:app\n", "backend"},
		{"two events at a time", "name: f\nruntime:\n  lambda: {command: [./bootstrap]}\nscaling: {container_concurrency: 2}\n", "scaling.container_concurrency"},
		{"function with a health path", "name: f\nruntime:\n  lambda: {command: [./bootstrap]}\n  health: /ping\n", "runtime.health"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), t.TempDir())
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantField+":") {
				t.Fatalf("want a problem naming %s, got %v", tc.wantField, err)
			}
		})
	}
}

// TestSetDefaults_LambdaOneEventAtATime: a function's instances take one
// event at a time (container_concurrency 1), a plain deployment's have no
// limit, and a function's program runs in the manifest's folder.
func TestSetDefaults_LambdaOneEventAtATime(t *testing.T) {
	dir := t.TempDir()
	m, err := Parse([]byte("name: f\nruntime:\n  lambda: {command: [./bootstrap]}\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Scaling.ContainerConcurrency; got != 1 {
		t.Errorf("function: container_concurrency %d, want 1", got)
	}
	if m.Runtime.Workdir != dir {
		t.Errorf("function: workdir %q, want the manifest's folder %q", m.Runtime.Workdir, dir)
	}
	m, err = Parse([]byte("name: f\nruntime:\n  lambda: {command: [./bootstrap]}\nscaling: {container_concurrency: 1}\n"), dir)
	if err != nil || m.Scaling.ContainerConcurrency != 1 {
		t.Errorf("function with container_concurrency 1: %v, %+v", err, m)
	}
	m, err = Parse([]byte("name: p\nruntime:\n  command: [x]\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Scaling.ContainerConcurrency; got != 0 {
		t.Errorf("plain deployment: container_concurrency %d, want 0", got)
	}
}
