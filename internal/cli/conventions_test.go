package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// fakeAdmin answers the control API's list and status with two
// deployments, and every other route with 404 in the API's error shape.
func fakeAdmin(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/deployments", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io := `[{"name":"echo","mode":"serverless","backend":"process","ready":1,"desired":1,"instances":[]},` +
			`{"name":"iris","mode":"dedicated","backend":"docker","ready":0,"desired":1,"last_error":"boom\nmore","instances":[]}]`
		w.Write([]byte(io))
	})
	mux.HandleFunc("GET /v1/deployments/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.PathValue("name") != "echo" {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":{"status":404,"code":"model_not_found","message":"model is not deployed"}}`))
			return
		}
		w.Write([]byte(`{"name":"echo","mode":"serverless","backend":"process","revision":"abc","ready":1,"instances":[{"id":"echo-1","state":"ready","revision":"abc","in_flight":0}]}`))
	})
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"gateway":"127.0.0.1:1","version":"v9.9.9"}`))
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs.URL
}

// execRoot runs the command line as main does, with admin as the control
// API, and returns its output and exit code.
func execRoot(t *testing.T, admin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"--admin", admin}, args...))
	err := root.ExecuteContext(context.Background())
	if err != nil {
		errOut.WriteString("error: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), ExitCode(err)
}

func TestExitCode(t *testing.T) {
	admin := fakeAdmin(t)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	tests := []struct {
		name  string
		admin string
		args  []string
		want  int
	}{
		{"ok", admin, []string{"ls"}, ExitOK},
		{"unknown flag", admin, []string{"ls", "--bogus"}, ExitUsage},
		{"unknown command", admin, []string{"lss"}, ExitUsage},
		{"missing argument", admin, []string{"status"}, ExitUsage},
		{"too many arguments", admin, []string{"ls", "x"}, ExitUsage},
		{"unknown output format", admin, []string{"ls", "-o", "xml"}, ExitUsage},
		{"wide where there is none", admin, []string{"version", "-o", "wide"}, ExitUsage},
		{"missing required flag", admin, []string{"deploy"}, ExitUsage},
		{"server says no", admin, []string{"status", "nope"}, ExitRuntime},
		{"server not reachable", gone.URL, []string{"ls"}, ExitRuntime},
		{"version without a server", gone.URL, []string{"version"}, ExitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := execRoot(t, tt.admin, tt.args...)
			if code != tt.want {
				t.Errorf("tandem %s: exit code %d, want %d\n%s", strings.Join(tt.args, " "), code, tt.want, stderr)
			}
		})
	}
}

// TestOutput checks that -o json is the API's JSON, -o yaml the same data,
// and that the deprecated --json still prints JSON.
func TestOutput(t *testing.T) {
	admin := fakeAdmin(t)
	for _, args := range [][]string{{"ls"}, {"status", "echo"}, {"version"}} {
		t.Run(args[0], func(t *testing.T) {
			j, stderr, code := execRoot(t, admin, append(args, "-o", "json")...)
			if code != 0 {
				t.Fatalf("-o json: exit %d: %s", code, stderr)
			}
			var fromJSON any
			if err := json.Unmarshal([]byte(j), &fromJSON); err != nil {
				t.Fatalf("-o json is no JSON: %v\n%s", err, j)
			}
			y, _, _ := execRoot(t, admin, append(args, "-o", "yaml")...)
			var fromYAML any
			if err := yaml.Unmarshal([]byte(y), &fromYAML); err != nil {
				t.Fatalf("-o yaml is no YAML: %v\n%s", err, y)
			}
			if !reflect.DeepEqual(fromJSON, fromYAML) {
				t.Errorf("-o yaml is not the data of -o json:\njson: %s\nyaml: %s", j, y)
			}
			// cobra writes the deprecation where SetOut points (stderr in
			// the binary: the e2e test checks that).
			old, _, _ := execRoot(t, admin, append(args, "--json")...)
			const note = "Flag --json has been deprecated, use -o json\n"
			if rest, ok := strings.CutPrefix(old, note); !ok || rest != j {
				t.Errorf("--json printed %q, want the deprecation and then -o json's %q", old, j)
			}
		})
	}
}

func TestOutput_wide(t *testing.T) {
	admin := fakeAdmin(t)
	narrow, _, _ := execRoot(t, admin, "ls")
	wide, _, _ := execRoot(t, admin, "ls", "-o", "wide")
	if strings.Contains(narrow, "REVISION") || !strings.Contains(wide, "REVISION") || !strings.Contains(wide, "LAST ERROR") {
		t.Errorf("-o wide does not add columns:\n%s\n%s", narrow, wide)
	}
	if !strings.Contains(wide, "boom") || strings.Contains(wide, "more") {
		t.Errorf("a cell shows more than the first line of an error:\n%s", wide)
	}
}

func TestCompleteDeployments(t *testing.T) {
	admin := fakeAdmin(t)
	for _, cmd := range []string{"status", "logs", "delete", "invoke"} {
		out, stderr, code := execRoot(t, admin, "__complete", cmd, "")
		if code != 0 || !strings.Contains(out, "echo\t") || !strings.Contains(out, "iris\t") {
			t.Errorf("__complete %s \"\": exit %d\n%s%s", cmd, code, out, stderr)
		}
		out, _, _ = execRoot(t, admin, "__complete", cmd, "ir")
		if strings.Contains(out, "echo") || !strings.Contains(out, "iris") {
			t.Errorf("__complete %s ir:\n%s", cmd, out)
		}
	}
	// The second argument of status is not a deployment.
	out, _, _ := execRoot(t, admin, "__complete", "status", "echo", "")
	if strings.Contains(out, "iris") {
		t.Errorf("__complete status echo \"\" offers names:\n%s", out)
	}
	out, _, _ = execRoot(t, admin, "__complete", "ls", "-o", "")
	for _, f := range []string{"json", "yaml", "wide"} {
		if !strings.Contains(out, f) {
			t.Errorf("__complete ls -o \"\" lacks %s:\n%s", f, out)
		}
	}
}

func TestVersion(t *testing.T) {
	admin := fakeAdmin(t)
	out, _, _ := execRoot(t, admin, "version")
	if !strings.Contains(out, "Client: "+Version) || !strings.Contains(out, "Server: v9.9.9") {
		t.Errorf("tandem version:\n%s", out)
	}
	out, _, _ = execRoot(t, admin, "version", "--client", "-o", "json")
	var v VersionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Client.Version != Version || v.Server != nil {
		t.Errorf("tandem version --client -o json = %s (%v)", out, err)
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	out, _, code := execRoot(t, gone.URL, "version")
	if code != 0 || !strings.Contains(out, "Client: ") || !strings.Contains(out, "Server: not reachable") {
		t.Errorf("tandem version without a server: exit %d\n%s", code, out)
	}
}
