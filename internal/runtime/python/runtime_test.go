package python

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

func TestRuntime_Prepare(t *testing.T) {
	r := Runtime{Bootstrap: "/data/python/bootstrap.py", Cache: "/data/python/pycache"}
	for _, tc := range []struct {
		name string
		rt   manifest.Runtime
		want []string
		err  error
	}{
		{"wsgi default python", manifest.Runtime{WSGI: "app:app"}, []string{"python3", r.Bootstrap, "wsgi", "app:app"}, nil},
		{"wsgi", manifest.Runtime{WSGI: "app:app", Python: "/usr/bin/python3"}, []string{"/usr/bin/python3", r.Bootstrap, "wsgi", "app:app"}, nil},
		{"handler", manifest.Runtime{Lambda: &manifest.Lambda{Handler: "pkg.app.handler", Python: "/opt/py"}}, []string{"/opt/py", r.Bootstrap, "lambda", "pkg.app.handler"}, nil},
		{"asgi", manifest.Runtime{ASGI: "main:app"}, []string{"python3", r.Bootstrap, "asgi", "main:app"}, nil},
		{"asgi with a template", manifest.Runtime{ASGI: "main:app", Template: &manifest.Template{}}, nil, ErrASGITemplate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &manifest.Manifest{Name: "fn", Runtime: tc.rt}
			m.Runtime.Env = map[string]string{"MODEL_PATH": "m.pkl", "PYTHONUNBUFFERED": "0"}
			if !r.Handles(m) {
				t.Fatal("not handled")
			}
			spec := backend.Spec{Manifest: m}
			err := r.Prepare(manifest.BackendProcess, &spec)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err != nil {
				if _, derr := r.Describe(m); !errors.Is(derr, ErrASGITemplate) {
					t.Fatalf("Describe (at deploy) did not refuse: %v", derr)
				}
				return
			}
			got := spec.Manifest.Runtime
			if !slices.Equal(got.Command, tc.want) {
				t.Fatalf("command %q, want %q", got.Command, tc.want)
			}
			if got.Env["PYTHONPYCACHEPREFIX"] != r.Cache || got.Env["MODEL_PATH"] != "m.pkl" || got.Env["PYTHONUNBUFFERED"] != "0" {
				t.Fatalf("env %v: the cache prefix set, the manifest's values kept", got.Env)
			}
			if m.Runtime.Command != nil || m.Runtime.Env["PYTHONPYCACHEPREFIX"] != "" {
				t.Fatal("Prepare modified the manifest in place")
			}
		})
	}
	if err := r.Prepare(manifest.BackendDocker, &backend.Spec{Manifest: &manifest.Manifest{Runtime: manifest.Runtime{WSGI: "a:b"}}}); err == nil {
		t.Fatal("docker accepted")
	}
	if r.Handles(&manifest.Manifest{Runtime: manifest.Runtime{Lambda: &manifest.Lambda{Command: []string{"./bootstrap"}}}}) {
		t.Fatal("a custom runtime's command is not a Python handler")
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	p1, err := Install(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p1)
	if err != nil || string(b) != string(bootstrap) {
		t.Fatalf("installed %s: %v", p1, err)
	}
	if p2, err := Install(dir); err != nil || p2 != p1 {
		t.Fatalf("second Install: %s %v", p2, err)
	}
	if !strings.HasPrefix(p1, filepath.Join(dir, "python")+"/") {
		t.Fatalf("installed outside the data folder: %s", p1)
	}
}

// wsgiApp exercises the server: an echo of the body, a streamed answer
// without a length, errors before and after the answer started.
const wsgiApp = `
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Method", environ["REQUEST_METHOD"]),
                                  ("X-Query", environ["QUERY_STRING"]), ("X-Te", environ.get("HTTP_X_TE", ""))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(3))
    if path == "/boom":
        raise ValueError("boom before the answer")
    if path == "/late":
        def gen():
            yield b"first"
            raise ValueError("boom after the answer started")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/unread":
        start_response("204 No Content", [])
        return []
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no"]
`

func startBootstrap(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wsgiapp.py"), []byte(wsgiApp), 0o644); err != nil {
		t.Fatal(err)
	}
	path, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(py, path, "wsgi", "wsgiapp:app")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "PYTHONDONTWRITEBYTECODE=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("the bootstrap did not listen within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBootstrap_WSGIServer sends raw exchanges on one connection: the
// server keeps it alive across bodies by length and chunked, streams an
// answer without a length chunked, answers HEAD without a body, turns an
// error before the answer into a 500 and cuts the connection after one.
func TestBootstrap_WSGIServer(t *testing.T) {
	addr := startBootstrap(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	exchange := func(raw string) (*http.Response, string) {
		t.Helper()
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		method, _, _ := strings.Cut(raw, " ")
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	resp, body := exchange("POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Te: v\r\n\r\nhello")
	if resp.StatusCode != 200 || body != "hello" || resp.ContentLength != 5 || resp.Header.Get("X-Query") != "a=1" || resp.Header.Get("X-Te") != "v" || resp.Close {
		t.Fatalf("echo: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = exchange("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: t\r\n\r\n")
	if resp.StatusCode != 200 || body != "abcdefg" {
		t.Fatalf("chunked upload: %d %q", resp.StatusCode, body)
	}
	resp, body = exchange("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 || body != "part0;part1;part2;" || !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
		t.Fatalf("stream: %d %q %v", resp.StatusCode, body, resp.TransferEncoding)
	}
	resp, body = exchange("HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Method") != "HEAD" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	// A body the app does not read is drained: the next request is intact.
	resp, _ = exchange("POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
	if resp.StatusCode != 204 {
		t.Fatalf("unread body: %d", resp.StatusCode)
	}
	resp, body = exchange("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 404 || body != "no" {
		t.Fatalf("after an unread body: %d %q", resp.StatusCode, body)
	}
	resp, body = exchange("GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 500 || !resp.Close {
		t.Fatalf("an app error: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}

	// After the answer started, an error cuts the connection: the chunked
	// answer never ends, so a client sees it incomplete.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c2, "GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("a failed answer read as complete: %q", b)
	}
}
