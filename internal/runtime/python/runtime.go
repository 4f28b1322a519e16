// Package python runs Python functions and apps on the process backend with
// a bootstrap of tandem's own (bootstrap.py, standard library only): a
// Lambda Runtime API client for runtime.lambda.handler, and a threaded
// HTTP/1.1 WSGI server for runtime.wsgi. Runtime turns such a manifest into
// the program an instance runs; Templates (template.go) starts instances
// as forks of a process that has imported the code once.
package python

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

//go:embed bootstrap.py
var bootstrap []byte

// DefaultPython is the interpreter when a manifest names none: the first
// python3 on PATH.
const DefaultPython = "python3"

// Install writes the bootstrap under dir (tandem's data folder: never the
// user's) as python/bootstrap-<hash>.py and returns its path. A file
// already there with the same content is kept.
func Install(dir string) (string, error) {
	sum := sha256.Sum256(bootstrap)
	d := filepath.Join(dir, "python")
	path := filepath.Join(d, "bootstrap-"+hex.EncodeToString(sum[:6])+".py")
	if b, err := os.ReadFile(path); err == nil && string(b) == string(bootstrap) {
		return path, nil
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("python bootstrap: %w", err)
	}
	tmp, err := os.CreateTemp(d, ".bootstrap-*")
	if err != nil {
		return "", fmt.Errorf("python bootstrap: %w", err)
	}
	_, err = tmp.Write(bootstrap)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("python bootstrap: %w", err)
	}
	return path, nil
}

// Runtime is the Python runtime's deploy-time knowledge
// (controller.Runtime): it serves runtime.lambda.handler, runtime.wsgi and
// runtime.asgi manifests on the process backend.
type Runtime struct {
	// Bootstrap is the installed bootstrap.py (Install).
	Bootstrap string
	// Cache is where Python keeps the bytecode of the user's modules
	// (PYTHONPYCACHEPREFIX), so that none is written into their folder.
	Cache string
}

// ErrASGITemplate is returned for runtime.asgi with runtime.template, which
// tandem does not fork yet (uvicorn's event loop is started per process).
var ErrASGITemplate = errors.New("runtime.template is not supported with runtime.asgi yet: an ASGI app starts without a template (runtime.wsgi and runtime.lambda.handler have templates)")

// Handles reports whether m is a Python handler or app.
func (Runtime) Handles(m *manifest.Manifest) bool {
	r := m.Runtime
	return (r.Lambda != nil && r.Lambda.Handler != "") || r.WSGI != "" || r.ASGI != ""
}

// Describe has no metadata to read; it refuses an ASGI app with a
// template at deploy.
func (Runtime) Describe(m *manifest.Manifest) (json.RawMessage, error) {
	if m.Runtime.ASGI != "" && m.Runtime.Template != nil {
		return nil, ErrASGITemplate
	}
	return nil, nil
}

// Command returns the program that runs m's handler or app, without a
// template.
func (r Runtime) Command(m *manifest.Manifest) ([]string, error) {
	rt := m.Runtime
	switch {
	case rt.ASGI != "" && rt.Template != nil:
		return nil, ErrASGITemplate
	case rt.ASGI != "":
		return []string{interpreter(rt.Python), r.Bootstrap, "asgi", rt.ASGI}, nil
	case rt.WSGI != "":
		return []string{interpreter(rt.Python), r.Bootstrap, "wsgi", rt.WSGI}, nil
	case rt.Lambda != nil && rt.Lambda.Handler != "":
		return []string{interpreter(rt.Lambda.Python), r.Bootstrap, "lambda", rt.Lambda.Handler}, nil
	}
	return nil, errors.New("python runtime: no runtime.wsgi, runtime.asgi or runtime.lambda.handler")
}

func interpreter(p string) string {
	if p == "" {
		return DefaultPython
	}
	return p
}

// Prepare sets the command and the environment: unbuffered output (a
// traceback reaches the log before the process ends), bytecode kept under
// tandem's data folder, and for a Lambda handler the function's name and
// memory as AWS's runtime gives them.
func (r Runtime) Prepare(backendName string, spec *backend.Spec) error {
	if backendName != manifest.BackendProcess {
		return fmt.Errorf("python runtime: runs on the process backend only, not %s", backendName)
	}
	cmd, err := r.Command(spec.Manifest)
	if err != nil {
		return err
	}
	cp := *spec.Manifest
	rt := cp.Runtime
	env := map[string]string{"PYTHONUNBUFFERED": "1"}
	if r.Cache != "" {
		env["PYTHONPYCACHEPREFIX"] = r.Cache
	}
	if rt.Lambda != nil {
		env["AWS_LAMBDA_FUNCTION_NAME"] = cp.Name
		env["AWS_LAMBDA_FUNCTION_VERSION"] = "$LATEST"
		if mem := int64(cp.Resources.Memory); mem > 0 {
			env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = strconv.FormatInt(mem>>20, 10)
		}
	}
	for k, v := range rt.Env {
		env[k] = v
	}
	rt.Env = env
	rt.Command = cmd
	cp.Runtime = rt
	spec.Manifest = &cp
	return nil
}
