package e2e

import (
	"bufio"
	"encoding/json"
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

	"tandem/internal/controller"
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

// pidApp is a WSGI app that answers its pid, its parent's and a random
// number drawn after start (a fork that kept the template's seed would
// draw the same in every instance).
const pidApp = `import os, random, time
random.random()  # the template's state, copied into every fork
START = time.time()

def app(environ, start_response):
    body = ("%d %d %r" % (os.getpid(), os.getppid(), random.random())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
`

// tandemProcs lists the processes running dataDir's bootstrap (templates
// and instances of one tandem serve).
func tandemProcs(t *testing.T, dataDir string) []int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cmd), filepath.Join(dataDir, "python")) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// noneLeft fails when a process of dataDir's bootstrap outlives the test.
func noneLeft(t *testing.T, dataDir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := tandemProcs(t, dataDir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("processes left behind: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	n, _ := strconv.Atoi(f[1])
	return n
}

func metricSum(t *testing.T, s *server, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// Instances forked from a template: a cold start from zero is a fork (the
// phase shows in the metrics), every instance draws its own random
// numbers, a kill -9 of one leaves the template and the others serving,
// and nothing is left running after tandem stops.
func TestPython_TemplateForksIsolatedInstances(t *testing.T) {
	needDebianPython(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pidapp.py"), pidApp)
	dataDir := t.TempDir()
	s := startServer(t, dataDir)
	s.deploy(dir, fmt.Sprintf(`name: forked
runtime:
  wsgi: pidapp:app
  python: %s
  workdir: .
  template: {keep: 1h}
scaling: {min: 0, max: 3, idle_timeout: 1s}
timeouts: {startup: 30s, grace: 2s}
`, debianPython))
	answer := func() (pid, parent int, rnd string) {
		t.Helper()
		r := s.call("GET", "/models/forked/", "")
		if r.code != 200 {
			t.Fatalf("request: %v", r)
		}
		if _, err := fmt.Sscanf(r.body, "%d %d %s", &pid, &parent, &rnd); err != nil {
			t.Fatalf("answer %q: %v", r.body, err)
		}
		return
	}
	pid1, tpl, rnd1 := answer()
	if tpl == 0 || ppid(tpl) != s.cmd.Process.Pid {
		t.Fatalf("instance %d's parent %d is not a template started by tandem (pid %d)", pid1, tpl, s.cmd.Process.Pid)
	}
	// From zero: the template stays, the next instance is a fork of it.
	s.waitFor("scale to zero", 30*time.Second, func(st *controller.Status) bool { return len(st.Instances) == 0 }, "forked")
	if !alive(tpl) || alive(pid1) {
		t.Fatalf("at zero: template alive %v (want true), instance alive %v (want false)", alive(tpl), alive(pid1))
	}
	pid2, tpl2, rnd2 := answer()
	if tpl2 != tpl || pid2 == pid1 {
		t.Fatalf("second cold start: pid %d of %d, want a new fork of the template %d", pid2, tpl2, tpl)
	}
	if rnd1 == rnd2 {
		t.Errorf("two forks drew the same random number %s: random is not reseeded", rnd1)
	}
	if n := metricSum(t, s, `tandem_instance_start_phase_seconds_count{model="forked",phase="fork"}`); n < 2 {
		t.Errorf("fork phases counted: %v, want 2", n)
	}
	if n := metricSum(t, s, `tandem_templates{model="forked"}`); n != 1 {
		t.Errorf("tandem_templates: %v, want 1", n)
	}
	if n := metricSum(t, s, `tandem_instances{model="forked"`); n > 1 {
		t.Errorf("tandem_instances counts %v, want the instance only (not the template)", n)
	}

	// A crash of one forked instance leaves the template and the others.
	s.deploy(dir, fmt.Sprintf(`name: forked
runtime:
  wsgi: pidapp:app
  python: %s
  workdir: .
  template: {keep: 1h}
scaling: {min: 2, max: 3, idle_timeout: 1s}
timeouts: {startup: 30s, grace: 2s}
`, debianPython))
	st := s.waitFor("two ready", 60*time.Second, func(st *controller.Status) bool {
		return st.Ready == 2 && len(st.Instances) == 2
	}, "forked")
	var pids []int
	for _, in := range st.Instances {
		resp, err := http.Get("http://" + in.Addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var p, pp int
		fmt.Sscanf(string(b), "%d %d", &p, &pp)
		pids = append(pids, p)
	}
	newTpl := ppid(pids[0])
	if newTpl != ppid(pids[1]) || newTpl == 0 {
		t.Fatalf("instances %v do not share a template", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if r := s.call("GET", "/models/forked/", ""); r.code != 200 {
			t.Fatalf("request %d after kill -9 of one instance: %v", i, r)
		}
	}
	if !alive(newTpl) || !alive(pids[1]) {
		t.Fatalf("after kill -9 of %d: template alive %v, other instance alive %v", pids[0], alive(newTpl), alive(pids[1]))
	}
	s.waitFor("the crashed instance replaced", 60*time.Second, func(st *controller.Status) bool {
		return st.Ready == 2 && st.Restarts >= 1
	}, "forked")
	// The old revision's template ended once its last instance had.
	deadline := time.Now().Add(20 * time.Second)
	for alive(tpl) {
		if time.Now().After(deadline) {
			t.Fatalf("the first revision's template %d still runs", tpl)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Delete: the template goes too.
	if out, err := s.tandem("delete", "forked"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	noneLeft(t, dataDir)
}

// A template that fails to import reports the Python traceback on the
// request and in status, and leaves nothing running.
func TestPython_TemplateImportErrorReported(t *testing.T) {
	needDebianPython(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "broken.py"), "import json\n\ndef load():\n    raise ValueError('model file is corrupt')\n\nload()\n")
	dataDir := t.TempDir()
	s := startServer(t, dataDir)
	s.deploy(dir, fmt.Sprintf("name: broken\nruntime:\n  wsgi: broken:app\n  python: %s\n  workdir: .\n  template: {}\ntimeouts:\n  startup: 30s\n", debianPython))
	r := s.call("GET", "/models/broken/", "")
	if r.code != 502 || !strings.Contains(r.body, "ValueError: model file is corrupt") || !strings.Contains(r.body, "line 4, in load") {
		t.Fatalf("request to a broken app: %v, want a 502 with the traceback", r)
	}
	st := s.status("broken")
	if !strings.Contains(st.LastError, "ValueError: model file is corrupt") {
		t.Fatalf("status last_error %q lacks the traceback", st.LastError)
	}
	out, _ := s.tandem("status", "broken")
	if !strings.Contains(out, "model file is corrupt") {
		t.Fatalf("tandem status lacks the traceback:\n%s", out)
	}
	s.stop(syscall.SIGTERM)
	noneLeft(t, dataDir)
}

// A template refuses code that starts threads at import (a fork copies
// only the forking thread), saying so.
func TestPython_TemplateRefusesThreads(t *testing.T) {
	needDebianPython(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "threaded.py"), "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True, name='poller').start()\n\ndef app(e, sr):\n    sr('200 OK', [])\n    return [b'ok']\n")
	dataDir := t.TempDir()
	s := startServer(t, dataDir)
	s.deploy(dir, fmt.Sprintf("name: threaded\nruntime:\n  wsgi: threaded:app\n  python: %s\n  workdir: .\n  template: {}\ntimeouts:\n  startup: 30s\n", debianPython))
	r := s.call("GET", "/models/threaded/", "")
	if r.code != 502 || !strings.Contains(r.body, "started threads at import (poller)") {
		t.Fatalf("request: %v, want a 502 naming the thread", r)
	}
	s.stop(syscall.SIGTERM)
	noneLeft(t, dataDir)
}

// sklearnPredict asks sklearn directly (Debian's python3) for the model's
// predictions of rows.
func sklearnPredict(t *testing.T, model string, rows [][]float64) []int {
	t.Helper()
	in, _ := json.Marshal(rows)
	cmd := exec.Command(debianPython, "-c", `import json, sys, joblib
m = joblib.load(sys.argv[1])
print(json.dumps([int(p) for p in m.predict(json.loads(sys.argv[2]))]))`, model, string(in))
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sklearn: %v", err)
	}
	var p []int
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("sklearn said %q: %v", out, err)
	}
	return p
}

// The seeds' iris Lambda handler (examples/iris-lambda) answers through
// the gateway (an API Gateway event) and through the Invoke API with the
// predictions sklearn makes, started plain and from a template; a handler
// that raises answers Lambda's error shape.
func TestPython_IrisLambdaHandler(t *testing.T) {
	needDebianPython(t)
	root := testbin.RepoRoot(t)
	model := filepath.Join(root, "examples", "iris-flask", "model.pkl")
	if _, err := os.Stat(model); err != nil {
		t.Fatalf("%s is missing: run scripts/setup.sh (it trains it): %v", model, err)
	}
	rows := [][]float64{{5.1, 3.5, 1.4, 0.2}, {7.0, 3.2, 4.7, 1.4}, {6.3, 3.3, 6.0, 2.5}, {5.9, 3.0, 5.1, 1.8}, {4.9, 2.4, 3.3, 1.0}}
	want := sklearnPredict(t, model, rows)
	dataDir := t.TempDir()
	s := startServer(t, dataDir)
	for _, f := range []string{"lambda.yaml", "template.yaml"} {
		if out, err := s.tandem("deploy", "-f", filepath.Join(root, "examples", "iris-lambda", f)); err != nil {
			t.Fatalf("deploy %s: %v\n%s", f, err, out)
		}
	}
	body, _ := json.Marshal(map[string]any{"instances": rows})
	for _, name := range []string{"iris-lambda", "iris-lambda-template"} {
		t.Run(name, func(t *testing.T) {
			var got struct {
				Predictions []int  `json:"predictions"`
				RequestID   string `json:"request_id"`
			}
			r := s.call("POST", "/models/"+name+"/predict", string(body))
			if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("through the gateway: %v %v", r, r.header)
			}
			if err := json.Unmarshal([]byte(r.body), &got); err != nil || !slices.Equal(got.Predictions, want) || got.RequestID == "" {
				t.Fatalf("through the gateway: %q, sklearn said %v", r.body, want)
			}
			// The Invoke API hands the handler the event as it is.
			ev, _ := json.Marshal(map[string]string{"body": string(body)})
			r = s.call("POST", "/2015-03-31/functions/"+name+"/invocations", string(ev))
			var res struct {
				StatusCode int    `json:"statusCode"`
				Body       string `json:"body"`
			}
			if r.code != 200 || json.Unmarshal([]byte(r.body), &res) != nil || res.StatusCode != 200 {
				t.Fatalf("Invoke API: %v", r)
			}
			if err := json.Unmarshal([]byte(res.Body), &got); err != nil || !slices.Equal(got.Predictions, want) {
				t.Fatalf("Invoke API: %q, sklearn said %v", res.Body, want)
			}
			// A handler that raises: Lambda's error shape, the handler's frames.
			r = s.call("POST", "/2015-03-31/functions/"+name+"/invocations", `{"nobody": 1}`)
			var e struct {
				ErrorMessage string   `json:"errorMessage"`
				ErrorType    string   `json:"errorType"`
				StackTrace   []string `json:"stackTrace"`
			}
			if r.code != 200 || r.header.Get("X-Amz-Function-Error") != "Unhandled" || json.Unmarshal([]byte(r.body), &e) != nil ||
				e.ErrorType != "KeyError" || e.ErrorMessage != "'body'" || len(e.StackTrace) == 0 || !strings.Contains(e.StackTrace[0], "app.py") {
				t.Fatalf("a handler that raises: %v %v", r, r.header)
			}
		})
	}
	for _, name := range []string{"iris-lambda", "iris-lambda-template"} {
		if out, err := s.tandem("delete", name); err != nil {
			t.Fatalf("delete: %v\n%s", err, out)
		}
	}
	noneLeft(t, dataDir)
}

// A Python handler whose module fails to import (no template) reports it
// to the Runtime API's /init/error: the request and status say why.
func TestPython_LambdaHandlerImportError(t *testing.T) {
	needDebianPython(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "fn.py"), "import nosuchmodule\n\ndef handler(event, context):\n    return {}\n")
	dataDir := t.TempDir()
	s := startServer(t, dataDir)
	s.deploy(dir, fmt.Sprintf("name: badfn\nruntime:\n  lambda: {handler: fn.handler, python: %s}\n  workdir: .\ntimeouts:\n  startup: 30s\n", debianPython))
	r := s.call("POST", "/2015-03-31/functions/badfn/invocations", `{}`)
	if !strings.Contains(r.body, "Runtime.ImportModuleError") || !strings.Contains(r.body, "No module named") {
		t.Fatalf("invoking a handler that fails to import: %v", r)
	}
	if st := s.status("badfn"); !strings.Contains(st.LastError, "No module named") {
		t.Fatalf("status last_error %q", st.LastError)
	}
	s.stop(syscall.SIGTERM)
	noneLeft(t, dataDir)
}

// A FastAPI app served as runtime.asgi with Debian's uvicorn: its lifespan
// ran, its answers come through the gateway, a bad body gets FastAPI's own
// 422, and a template is refused at deploy.
func TestPython_ASGIFastAPI(t *testing.T) {
	if err := exec.Command(debianPython, "-c", "import fastapi, uvicorn").Run(); err != nil {
		t.Fatalf("%s with fastapi and uvicorn is needed (scripts/setup.sh installs python3-fastapi and python3-uvicorn): %v", debianPython, err)
	}
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "asgi", "main.py"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "main.py"), string(src))
	man := "name: fast\nruntime:\n  asgi: main:app\n  python: " + debianPython + "\n  health: /health\n"
	writeFile(t, filepath.Join(dir, "fast.yaml"), man)
	s := startServer(t, "")
	if out, err := s.tandem("deploy", "-f", filepath.Join(dir, "fast.yaml")); err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	code, _, body := get(t, "GET", "http://"+s.gateway+"/models/fast/health", "")
	if code != 200 || !strings.Contains(body, `"lifespan":true`) {
		t.Fatalf("GET /health: %d %q, want 200 with the lifespan started", code, body)
	}
	code, _, body = get(t, "POST", "http://"+s.gateway+"/models/fast/predict", `{"features": [1.5, 2, 3]}`)
	if code != 200 || !strings.Contains(body, `"sum":6.5`) {
		t.Fatalf("POST /predict: %d %q", code, body)
	}
	code, _, body = get(t, "POST", "http://"+s.gateway+"/models/fast/predict", `{"features": "no"}`)
	if code != 422 || !strings.Contains(body, "features") {
		t.Fatalf("a bad body: %d %q, want FastAPI's 422 naming the field", code, body)
	}
	writeFile(t, filepath.Join(dir, "tmpl.yaml"), strings.Replace(man, "name: fast", "name: fast-tmpl", 1)+"  template: {}\n")
	if out, err := s.tandem("deploy", "-f", filepath.Join(dir, "tmpl.yaml")); err == nil || !strings.Contains(out, "runtime.template") {
		t.Fatalf("an ASGI app with a template deployed: %v\n%s", err, out)
	}
}
