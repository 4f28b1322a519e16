package docker

import (
	"errors"
	"testing"

	"tandem/internal/manifest"
)

func TestBackend_Check(t *testing.T) {
	for _, tt := range []struct {
		name   string
		y      string
		nvidia bool
		field  string // "" when the manifest is accepted
	}{
		{"image", "runtime: {image: x}\n", false, ""},
		{"everything docker honours", "runtime: {image: x, command: [srv], args: [--v], env: {A: b}, health: /h, port: 9000, network: host}\nresources: {cpu: 0.5, memory: 64Mi}\n", false, ""},
		{"gpus with an nvidia runtime", "runtime: {image: x}\nresources: {gpus: 1}\n", true, ""},
		{"gpus without one", "runtime: {image: x}\nresources: {gpus: 1}\n", false, "resources.gpus"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEngine()
			f.nvidia = tt.nvidia
			b := newFakeBackend(t, f)
			m, err := manifest.Parse([]byte("name: m\nbackend: docker\n"+tt.y), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			err = b.Check(m)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var me *manifest.Error
			if !errors.As(err, &me) || len(me.Problems) != 1 || me.Problems[0].Field != tt.field {
				t.Fatalf("Check = %v, want one problem on %s", err, tt.field)
			}
		})
	}
}
