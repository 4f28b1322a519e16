package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/testbin"
)

// debianPython is the interpreter with flask, sklearn and joblib (the first
// python3 on PATH may lack them).
const debianPython = "/usr/bin/python3"

func needDebianPython(t *testing.T) {
	t.Helper()
	if err := exec.Command(debianPython, "-c", "import flask, sklearn, joblib").Run(); err != nil {
		t.Fatalf("%s with flask, sklearn and joblib is needed (scripts/setup.sh installs them): %v", debianPython, err)
	}
}

// irisCases are requests to the iris app: the committed rows, and bad
// requests the app answers itself.
var irisCases = []struct{ method, path, body string }{
	{"POST", "/predict", `{"instances": [[5.1, 3.5, 1.4, 0.2], [5.0, 3.3, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [5.7, 2.8, 4.1, 1.3], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 5.1, 1.8]]}`},
	{"POST", "/predict", `{"features": [6.7, 3.0, 5.2, 2.3]}`},
	{"POST", "/predict", `{"instances": [[1, 2]]}`},
	{"POST", "/predict", `not json`},
	{"GET", "/predict", ""},
	{"GET", "/health", ""},
	{"GET", "/nowhere", ""},
}

// runDirect runs the iris app.py as its tutorial does (python3 app.py) and
// returns its address; it is killed at the end of the test.
func runDirect(t *testing.T, dir string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(debianPython, "app.py")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "MODEL_PATH=model.pkl", "PYTHONDONTWRITEBYTECODE=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get("http://" + addr + "/health"); err == nil {
			resp.Body.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("python3 app.py did not serve within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, method, url, body string) (int, string, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// The seeds' Flask app.py, unchanged, deployed as runtime.wsgi: app:app,
// answers every request like the same file run with python3 app.py.
func TestPython_WSGIFlaskAppUnchanged(t *testing.T) {
	needDebianPython(t)
	dir := filepath.Join(testbin.RepoRoot(t), "examples", "iris-flask")
	direct := runDirect(t, dir)
	s := startServer(t, "")
	if out, err := s.tandem("deploy", "-f", filepath.Join(dir, "wsgi.yaml")); err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	for _, c := range irisCases {
		code, ctype, body := get(t, c.method, "http://"+s.gateway+"/models/iris-wsgi"+c.path, c.body)
		wcode, wctype, wbody := get(t, c.method, "http://"+direct+c.path, c.body)
		if code != wcode || ctype != wctype || body != wbody {
			t.Errorf("%s %s %s: through tandem %d %s %q; python3 app.py %d %s %q", c.method, c.path, c.body, code, ctype, body, wcode, wctype, wbody)
		}
	}
	// One keep-alive connection carries many requests (Flask's development
	// server closes each), a chunked upload included.
	inst := s.status("iris-wsgi").Instances
	if len(inst) != 1 {
		t.Fatalf("instances: %+v", inst)
	}
	conn, err := net.Dial("tcp", inst[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i := range 3 {
		body := `{"features": [6.3, 3.3, 6.0, 2.5]}`
		req := fmt.Sprintf("POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
		if i == 1 {
			req = fmt.Sprintf("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on one connection: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close || !strings.Contains(string(b), `"predictions":[2]`) {
			t.Fatalf("request %d on one connection: %d close=%v %q", i, resp.StatusCode, resp.Close, b)
		}
	}
	// Nothing of tandem's is written into the user's folder.
	if _, err := os.Stat(filepath.Join(dir, "__pycache__")); err == nil {
		t.Errorf("a __pycache__ folder was written into %s", dir)
	}
}

// A WSGI app whose module fails to import reports the traceback on the
// request and in status.
func TestPython_WSGIImportErrorOnTheRequest(t *testing.T) {
	needDebianPython(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "broken.py"), "import json\nraise ValueError('model file is corrupt')\n")
	s := startServer(t, "")
	s.deploy(dir, fmt.Sprintf("name: broken\nruntime:\n  wsgi: broken:app\n  python: %s\n  workdir: .\ntimeouts:\n  startup: 30s\n", debianPython))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_ = ctx
	r := s.call("GET", "/models/broken/", "")
	if r.code != 502 || !strings.Contains(r.body, "exited") {
		t.Fatalf("request to a broken app: %v", r)
	}
	out, _ := s.tandem("logs", "broken")
	if !strings.Contains(out, "ValueError: model file is corrupt") {
		t.Fatalf("logs lack the traceback:\n%s", out)
	}
	_ = json.Valid
}
