package process

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"tandem/internal/manifest"
)

func TestBackend_Check(t *testing.T) {
	withLimits := cgroups{version: cgroupV2, root: "/sys/fs/cgroup"}
	noLimits := cgroups{why: "not running as root"}
	for _, tt := range []struct {
		name   string
		y      string
		cg     cgroups
		fields []string // refused, in order; none when accepted
	}{
		{"command", "runtime: {command: [srv], env: {A: b}, health: /h, port: 9000}\n", noLimits, nil},
		{"host network is what a process has", "runtime: {command: [srv], network: host}\n", noLimits, nil},
		{"memory with cgroups", "runtime: {command: [srv]}\nresources: {memory: 64Mi}\n", withLimits, nil},
		{"memory without cgroups", "runtime: {command: [srv]}\nresources: {memory: 64Mi}\n", noLimits, []string{"resources.memory"}},
		{"image", "runtime: {image: x}\n", withLimits, []string{"runtime.image"}},
		{"image with a command", "runtime: {image: x, command: [srv]}\n", withLimits, []string{"runtime.image"}},
		{"args", "runtime: {command: [srv], args: [--v]}\n", withLimits, []string{"runtime.args"}},
		{"cpu and gpus", "runtime: {command: [srv]}\nresources: {cpu: 1, gpus: 1}\n", withLimits, []string{"resources.cpu", "resources.gpus"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := manifest.Parse([]byte("name: m\n"+tt.y), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			b := &Backend{cg: tt.cg}
			err = b.Check(m)
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var me *manifest.Error
			if !errors.As(err, &me) {
				t.Fatalf("Check = %v, want a *manifest.Error", err)
			}
			var got []string
			for _, p := range me.Problems {
				got = append(got, p.Field)
				if !strings.Contains(p.Message, "process backend") {
					t.Errorf("%s: %q does not name the process backend", p.Field, p.Message)
				}
			}
			if !slices.Equal(got, tt.fields) {
				t.Errorf("refused %v, want %v", got, tt.fields)
			}
		})
	}
}
