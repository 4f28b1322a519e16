package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"tandem/internal/controller"
)

// run runs a CLI command against this server and keeps its standard
// output, standard error and exit code apart.
func (s *server) run(args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, append([]string{"--admin", s.admin}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		s.t.Fatalf("tandem %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// cliServer is a server with one dedicated deployment, "cli", ready, and
// a tenant, "acme", with a key.
func cliServer(t *testing.T) *server {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "cli", "dedicated", nil, "min: 1\nmax: 1", "startup: 20s\ngrace: 2s"))
	s.waitFor("ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "cli")
	for _, args := range [][]string{{"tenant", "create", "acme", "--rate", "5/s"}, {"key", "create", "--tenant", "acme"}} {
		if out, err := s.tandem(args...); err != nil {
			t.Fatalf("tandem %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return s
}

// TestCLI_OutputFormats is the test 5: every command that prints a
// resource prints JSON with -o json, and with -o yaml the same data.
func TestCLI_OutputFormats(t *testing.T) {
	s := cliServer(t)
	commands := []struct {
		args []string
		// live: the resource changes between two calls (a running
		// instance's idle seconds, the report's end), so the two are
		// compared by shape: the same fields, lengths, types and text.
		live bool
	}{
		{args: []string{"ls"}},
		{args: []string{"status", "cli"}},
		{args: []string{"version"}},
		{args: []string{"cost", "--since", "1h"}, live: true},
		{args: []string{"cost", "--tenant", "acme"}},
		{args: []string{"tenant", "ls"}},
		{args: []string{"tenant", "status", "acme"}},
		{args: []string{"key", "ls"}},
	}
	for _, c := range commands {
		args := c.args
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			j, stderr, code := s.run(append(args, "-o", "json")...)
			if code != 0 {
				t.Fatalf("-o json: exit %d\n%s", code, stderr)
			}
			var fromJSON any
			if err := json.Unmarshal([]byte(j), &fromJSON); err != nil {
				t.Fatalf("-o json printed no JSON: %v\n%s", err, j)
			}
			y, stderr, code := s.run(append(args, "-o", "yaml")...)
			if code != 0 {
				t.Fatalf("-o yaml: exit %d\n%s", code, stderr)
			}
			if json.Valid([]byte(y)) {
				t.Errorf("-o yaml printed JSON:\n%s", y)
			}
			var fromYAML any
			if err := yaml.Unmarshal([]byte(y), &fromYAML); err != nil {
				t.Fatalf("-o yaml printed no YAML: %v\n%s", err, y)
			}
			if c.live {
				if err := sameShape("", fromJSON, fromYAML); err != nil {
					t.Errorf("-o yaml is not -o json's data: %v\njson:\n%s\nyaml:\n%s", err, j, y)
				}
			} else if !reflect.DeepEqual(fromJSON, fromYAML) {
				t.Errorf("-o yaml is not -o json's data:\njson:\n%s\nyaml:\n%s", j, y)
			}
		})
	}

	// --json still works for scripts, with its deprecation on stderr only.
	j, _, _ := s.run("status", "cli", "-o", "json")
	old, stderr, code := s.run("status", "cli", "--json")
	if code != 0 || old != j || !strings.Contains(stderr, "deprecated") {
		t.Errorf("status --json: exit %d, stdout equal to -o json: %v, stderr %q", code, old == j, stderr)
	}

	wide, _, _ := s.run("ls", "-o", "wide")
	if !strings.Contains(wide, "REVISION") || !strings.Contains(wide, "cli") {
		t.Errorf("ls -o wide:\n%s", wide)
	}
}

// sameShape says where a and b (decoded JSON) differ other than in numbers
// and times: fields, lengths, types, and every other string and bool.
func sameShape(path string, a, b any) error {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(bm) != len(a) {
			return fmt.Errorf("%s: %v vs %v", path, a, b)
		}
		for k, v := range a {
			if err := sameShape(path+"."+k, v, bm[k]); err != nil {
				return err
			}
		}
	case []any:
		bs, ok := b.([]any)
		if !ok || len(bs) != len(a) {
			return fmt.Errorf("%s: %d items vs %v", path, len(a), b)
		}
		for i := range a {
			if err := sameShape(fmt.Sprintf("%s[%d]", path, i), a[i], bs[i]); err != nil {
				return err
			}
		}
	case float64:
		if _, ok := b.(float64); !ok {
			return fmt.Errorf("%s: %v vs %v", path, a, b)
		}
	case string:
		bs, ok := b.(string)
		_, aTime := time.Parse(time.RFC3339Nano, a)
		_, bTime := time.Parse(time.RFC3339Nano, bs)
		if !ok || a != bs && (aTime != nil || bTime != nil) {
			return fmt.Errorf("%s: %q vs %v", path, a, b)
		}
	default:
		if a != b {
			return fmt.Errorf("%s: %v vs %v", path, a, b)
		}
	}
	return nil
}

func TestCLI_ExitCodes(t *testing.T) {
	s := cliServer(t)
	// An address nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := l.Addr().String()
	l.Close()
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"ok", []string{"ls"}, 0},
		{"unknown flag", []string{"ls", "--no-such-flag"}, 2},
		{"unknown command", []string{"no-such-command"}, 2},
		{"bad argument count", []string{"status"}, 2},
		{"bad output format", []string{"ls", "-o", "xml"}, 2},
		{"server says no", []string{"status", "no-such-model"}, 1},
		{"server not reachable", []string{"--admin", nobody, "ls"}, 1},
		{"version without a server", []string{"--admin", nobody, "version"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := s.run(tt.args...)
			if code != tt.want {
				t.Errorf("tandem %s: exit %d, want %d\n%s%s", strings.Join(tt.args, " "), code, tt.want, out, stderr)
			}
			if code == 2 && !strings.Contains(stderr, "--help") {
				t.Errorf("a usage error does not point to --help: %q", stderr)
			}
		})
	}
	out, _, _ := s.run("--admin", nobody, "version")
	if !strings.Contains(out, "Client: ") || !strings.Contains(out, "not reachable") {
		t.Errorf("version without a server:\n%s", out)
	}
}

func TestCLI_Completion(t *testing.T) {
	s := cliServer(t)
	s.deploy("", fakeManifest(t, "other", "serverless", nil, "min: 0\nmax: 1", "startup: 20s"))
	for _, cmd := range []string{"status", "logs", "delete", "invoke"} {
		out, stderr, code := s.run("__complete", cmd, "")
		var names []string
		for _, l := range strings.Split(out, "\n") {
			if l == "" || strings.HasPrefix(l, ":") {
				continue
			}
			name, _, _ := strings.Cut(l, "\t")
			names = append(names, name)
		}
		if code != 0 || !reflect.DeepEqual(names, []string{"cli", "other"}) && !reflect.DeepEqual(names, []string{"other", "cli"}) {
			t.Errorf("__complete %s \"\": exit %d, names %q\n%s%s", cmd, code, names, out, stderr)
		}
	}
	out, _, _ := s.run("__complete", "tenant", "status", "")
	if !strings.Contains(out, "acme\n") {
		t.Errorf("__complete tenant status \"\":\n%s", out)
	}
	keys, _, _ := s.run("key", "ls", "-o", "json")
	var list []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(keys), &list); err != nil || len(list) != 1 {
		t.Fatalf("key ls -o json: %v\n%s", err, keys)
	}
	if out, _, _ := s.run("__complete", "key", "revoke", ""); !strings.Contains(out, list[0].ID+"\n") {
		t.Errorf("__complete key revoke \"\" lacks %s:\n%s", list[0].ID, out)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, _, code := s.run("completion", shell)
		if code != 0 || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: exit %d, %d bytes", shell, code, len(out))
		}
	}
}

// lineReader collects a command's output lines as they come.
type lineReader struct {
	mu    sync.Mutex
	lines []string
	added chan struct{}
	done  chan struct{}
}

func readLines(r io.Reader) *lineReader {
	lr := &lineReader{added: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(lr.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.mu.Lock()
			lr.lines = append(lr.lines, sc.Text())
			lr.mu.Unlock()
			select {
			case lr.added <- struct{}{}:
			default:
			}
		}
	}()
	return lr
}

func (lr *lineReader) text() string {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return strings.Join(lr.lines, "\n")
}

// waitFor waits for a line holding want; limit bounds a hang.
func (lr *lineReader) waitFor(t *testing.T, want string, limit time.Duration) {
	t.Helper()
	deadline := time.After(limit)
	for !strings.Contains(lr.text(), want) {
		select {
		case <-lr.added:
		case <-lr.done:
			if !strings.Contains(lr.text(), want) {
				t.Fatalf("output ended without %q:\n%s", want, lr.text())
			}
		case <-deadline:
			t.Fatalf("no %q within %s:\n%s", want, limit, lr.text())
		}
	}
}

// follow starts `tandem logs -f name`.
func (s *server) follow(t *testing.T, name string) (*exec.Cmd, *lineReader, chan error) {
	t.Helper()
	cmd := exec.Command(s.bin, "--admin", s.admin, "logs", "-f", name)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lr := readLines(stdout)
	exited := make(chan error, 1)
	go func() {
		<-lr.done // Wait closes the pipe: read all first
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-lr.done
	})
	return cmd, lr, exited
}

func TestCLI_LogsFollow(t *testing.T) {
	s := cliServer(t)

	t.Run("new lines, until the deployment is deleted", func(t *testing.T) {
		_, lr, exited := s.follow(t, "cli")
		// The instance's first line says the follow has begun.
		lr.waitFor(t, "fakemodel: pid", 30*time.Second)
		if r := s.call("GET", "/models/cli/log?msg=written-after-the-follow-began", ""); r.code != 200 {
			t.Fatalf("log call: %v", r)
		}
		lr.waitFor(t, "| written-after-the-follow-began", 30*time.Second)
		if out, err := s.tandem("delete", "cli"); err != nil {
			t.Fatalf("delete: %v\n%s", err, out)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("logs -f ended with %v after the delete, want exit 0", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("logs -f still runs after the deployment was deleted:\n%s", lr.text())
		}
	})

	t.Run("until interrupted", func(t *testing.T) {
		s.deploy("", fakeManifest(t, "cli2", "dedicated", nil, "min: 1\nmax: 1", "startup: 20s\ngrace: 2s"))
		s.waitFor("ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "cli2")
		cmd, lr, exited := s.follow(t, "cli2")
		lr.waitFor(t, "fakemodel: pid", 30*time.Second)
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("logs -f ended with %v on an interrupt, want exit 0", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("logs -f still runs after an interrupt")
		}
	})
}
