package kubernetes

import (
	"errors"
	"io"
	"strings"
	"testing"

	"tandem/internal/manifest"
)

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		name  string
		y     string
		cfg   Config
		field string // "" when the manifest is accepted
	}{
		{"image", "runtime: {image: x}\n", Config{}, ""},
		{"everything kubernetes honours", "runtime: {image: x, command: [srv], args: [--v], env: {A: b}, health: /h, port: 9000}\nresources: {cpu: 0.5, memory: 64Mi, gpus: 1}\n", Config{}, ""},
		{"host network on the pod network", "runtime: {image: x, network: host}\n", Config{}, "runtime.network"},
		{"host network on a host-network server", "runtime: {image: x, network: host}\n", Config{HostNetwork: true}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := parse(t, "name: m\nbackend: kubernetes\n"+tt.y)
			err := check(m, tt.cfg)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("check = %v, want nil", err)
				}
				return
			}
			var me *manifest.Error
			if !errors.As(err, &me) || len(me.Problems) != 1 || me.Problems[0].Field != tt.field ||
				!strings.Contains(me.Problems[0].Message, "kubernetes backend") {
				t.Fatalf("check = %v, want one problem on %s naming the kubernetes backend", err, tt.field)
			}
		})
	}
}

// Export refuses what Apply would.
func TestExport_Checks(t *testing.T) {
	m := parse(t, "name: m\nbackend: kubernetes\nruntime: {image: x, network: host}\n")
	if err := Export(io.Discard, specOf(m), Config{}); err == nil || !strings.Contains(err.Error(), "runtime.network") {
		t.Errorf("Export = %v, want an error naming runtime.network", err)
	}
	if err := Export(io.Discard, specOf(m), Config{HostNetwork: true}); err != nil {
		t.Errorf("Export with host networking = %v", err)
	}
}
