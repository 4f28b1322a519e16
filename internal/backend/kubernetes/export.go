package kubernetes

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"tandem/internal/backend"
)

// Export writes the objects Apply would create for spec as a YAML stream
// (ConfigMap when there is one, Deployment, Service), for teams that keep
// their cluster in Git. It uses Build, so it matches Apply, except that the
// Deployment has no spec.replicas: tandem sets that itself. It calls no
// API server.
func Export(w io.Writer, spec backend.Spec, cfg Config) error {
	if spec.Manifest != nil {
		// What Apply would refuse at deploy, Export refuses too.
		if err := check(spec.Manifest, cfg); err != nil {
			return fmt.Errorf("kubernetes: export: %w", err)
		}
	}
	objs, err := Build(spec, cfg)
	if err != nil {
		return fmt.Errorf("kubernetes: export: %w", err)
	}
	// No replica count: tandem owns it (the scale subresource), and a
	// manifest without one lets `kubectl apply` leave tandem's alone, as
	// with a HorizontalPodAutoscaler.
	objs.Deployment.Spec.Replicas = nil
	list := []any{objs.Deployment, objs.Service}
	if objs.ConfigMap != nil {
		list = append([]any{objs.ConfigMap}, list...)
	}
	for i, obj := range list {
		b, err := cleanYAML(obj)
		if err != nil {
			return fmt.Errorf("kubernetes: export: %w", err)
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// cleanYAML renders obj without the empty status and the null creation
// timestamps that Go's zero values would otherwise print.
func cleanYAML(obj any) ([]byte, error) {
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	prune(m)
	return yaml.Marshal(m)
}

// prune drops null values and empty objects, recursively.
func prune(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			prune(v)
			if len(v) == 0 {
				delete(m, k)
			}
		case []any:
			for _, e := range v {
				if em, ok := e.(map[string]any); ok {
					prune(em)
				}
			}
		}
	}
}
