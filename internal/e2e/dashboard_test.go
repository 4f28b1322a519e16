package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"tandem/internal/controller"
)

// TestDashboard opens the dashboard of a real tandem serve in headless
// Chromium: the overview and a deployment's page load with no console
// error, show what the control API says, draw a burst in the instances
// chart, show a deployment made after the page loaded, and the cost
// `tandem cost` shows. Screenshots go to $TANDEM_ARTEFACTS/dashboard (a
// temporary folder when unset).
func TestDashboard(t *testing.T) {
	b := newBrowser(t)
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "dash", "serverless", nil,
		"max: 3\ntarget_concurrency: 1\nidle_timeout: 2s\nstable_window: 3s\npanic_window: 500ms\nmax_queue: 100",
		"startup: 20s\nrequest: 30s"))
	ui := "http://" + s.admin + "/ui/"

	b.open(ui)
	b.wait("the overview's first update", 10*time.Second, `window.tandemDashboard.updates >= 1 && !!document.querySelector('tr[data-deployment="dash"]')`)

	// The table says what GET /v1/deployments says.
	var sts []controller.Status
	getJSON(t, "http://"+s.admin+"/v1/deployments", &sts)
	if len(sts) != 1 {
		t.Fatalf("/v1/deployments: %+v", sts)
	}
	var row []string
	b.eval(`Array.from(document.querySelector('tr[data-deployment="dash"]').children).map(function (td) { return td.textContent; })`, &row)
	if want := []string{"dash", string(sts[0].Mode), sts[0].Backend, sts[0].Revision, sts[0].Revision + " 100%"}; len(row) < 5 || strings.Join(row[:5], "|") != strings.Join(want, "|") {
		t.Errorf("overview row %q, want it to begin %q", row, want)
	}

	// A deployment made after the page loaded shows up without a reload.
	// The dashboard samples every second and the page polls every second:
	// 2 s by design; the bound leaves a second for a loaded machine.
	s.deploy("", fakeManifest(t, "dash-late", "dedicated", nil, "min: 1\nmax: 1", "startup: 20s"))
	b.wait("the deployment made after the page loaded", 3*time.Second, `!!document.querySelector('tr[data-deployment="dash-late"]')`)

	// A burst: the instances chart draws the instances the API reports.
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() { defer wg.Done(); s.call("GET", "/models/dash/sleep?d=3s", "") }()
	}
	st := s.waitFor("a scale-up", 20*time.Second, func(st *controller.Status) bool { return st.Ready+st.Starting >= 2 }, "dash")
	n := st.Ready + st.Starting
	b.wait(fmt.Sprintf("%d instances in the instances chart", n), 3*time.Second, fmt.Sprintf(`(function () {
		var c = window.tandemDashboard.chart("instances");
		var i = c.labels.indexOf("dash");
		return i >= 0 && c.data[i + 1].some(function (v) { return v !== null && v >= %d; });
	})()`, n))
	b.shot("overview-burst.png")
	wg.Wait()

	// A deployment's page: the same numbers, and the burst by state.
	b.open(ui + "d/dash")
	b.wait("the deployment page's first update", 10*time.Second, `window.tandemDashboard.updates >= 1 && window.tandemDashboard.page === "deployment"`)
	st = s.status("dash")
	var cards map[string]string
	b.eval(`(function () { var o = {}; document.querySelectorAll('.card .v[data-field]').forEach(function (e) { o[e.dataset.field] = e.textContent; }); return o; })()`, &cards)
	if cards["mode"] != string(st.Mode) || cards["revision"] != st.Revision {
		t.Errorf("cards %q, want mode %s and revision %s", cards, st.Mode, st.Revision)
	}
	var ready []any
	b.eval(`window.tandemDashboard.chart("instances").data[1]`, &ready)
	most := 0.0
	for _, v := range ready {
		if f, ok := v.(float64); ok {
			most = max(most, f)
		}
	}
	if most < 1 {
		t.Errorf("the deployment's instances chart has no ready instance: %v", ready)
	}

	// Back at zero, the cost stops moving: the page shows what `tandem
	// cost` shows, on both pages.
	s.waitFor("scale to zero", 30*time.Second, func(st *controller.Status) bool { return len(st.Instances) == 0 }, "dash")
	want := costLine(t, s, "dash")
	check := func(page string) {
		t.Helper()
		js := `(function () { var e = document.querySelector('[data-field="cost"]'); return e ? e.textContent : ""; })()`
		// The dashboard reads the cost report every 10 s.
		b.wait(page+": the cost `tandem cost` shows, "+want[0], 15*time.Second, fmt.Sprintf(`%s === %q`, js, want[0]))
	}
	check("deployment page")
	b.shot("deployment.png")
	b.open(ui)
	b.wait("the overview", 10*time.Second, `window.tandemDashboard.updates >= 1 && !!document.querySelector('tr[data-deployment="dash"]')`)
	var cells map[string]string
	b.wait("the overview's cost", 15*time.Second, fmt.Sprintf(`document.querySelector('tr[data-deployment="dash"] [data-field="cost"]').textContent === %q`, want[0]))
	b.eval(`(function () { var o = {}; document.querySelectorAll('tr[data-deployment="dash"] [data-field]').forEach(function (e) { o[e.dataset.field] = e.textContent; }); return o; })()`, &cells)
	// At zero a serverless deployment's cost stops, and so does what it
	// would have cost as serverless; as dedicated it would still be paying
	// for an instance, so that one moves between the two readings.
	if cells["as_serverless"] != want[1] {
		t.Errorf("overview: as serverless %q; tandem cost: %q", cells["as_serverless"], want[1])
	}
	if !strings.HasPrefix(cells["as_dedicated"], "$") || cells["as_dedicated"] == "$0" {
		t.Errorf("overview: as dedicated %q; tandem cost: %q", cells["as_dedicated"], want[2])
	}
	var kinds []string
	b.eval(`Array.from(document.querySelectorAll('#events .event')).map(function (e) { return e.dataset.kind; })`, &kinds)
	for _, k := range []string{"deployed", "scale_up", "scale_down"} {
		if !contains(kinds, k) {
			t.Errorf("no %s event among %q", k, kinds)
		}
	}
	b.shot("overview.png")
	b.checkConsole()
}

// costLine returns cost, as serverless and as dedicated of model from the
// `tandem cost` table.
func costLine(t *testing.T, s *server, model string) [3]string {
	t.Helper()
	out, err := s.tandem("cost")
	if err != nil {
		t.Fatalf("tandem cost: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		// model mode requests cold instance-s starting busy idle cost per1k idle-cost as-serverless as-dedicated
		if len(f) == 13 && f[0] == model {
			return [3]string{f[8], f[11], f[12]}
		}
	}
	t.Fatalf("tandem cost has no line for %s:\n%s", model, out)
	return [3]string{}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// browser is a headless Chromium driven over the DevTools protocol, with
// no network but loopback; it records console errors and exceptions.
type browser struct {
	t    *testing.T
	ctx  context.Context
	dir  string // screenshots
	mu   sync.Mutex
	errs []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			exe = p
			break
		}
	}
	if exe == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("Chromium is required in CI for the dashboard test (bash scripts/setup.sh chromium)")
		}
		t.Skip("SKIPPING the dashboard test: no Chromium (bash scripts/setup.sh chromium)")
	}
	dir := t.TempDir()
	if a := os.Getenv("TANDEM_ARTEFACTS"); a != "" {
		dir = filepath.Join(a, "dashboard")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	profile, tmp := t.TempDir(), t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.UserDataDir(profile), chromedp.WindowSize(1400, 1100),
		// Chromium leaves its singleton socket folder in TMPDIR when killed.
		chromedp.Env("TMPDIR="+tmp),
		// No network but loopback (which Chromium never proxies).
		chromedp.ProxyServer("127.0.0.1:9"), chromedp.Flag("disable-quic", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx, dir: dir}
	t.Cleanup(func() {
		cancelC()
		cancelA()
		// Chromium's helper processes may still write to the profile for a
		// moment after the browser is gone: empty the folders before the
		// testing package's own cleanup (which fails on a non-empty one).
		for _, d := range []string{profile, tmp} {
			for i := 0; i < 100; i++ {
				if os.RemoveAll(d) == nil {
					if _, err := os.Stat(d); os.IsNotExist(err) {
						break
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	})
	chromedp.ListenTarget(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.APITypeError || ev.Type == runtime.APITypeAssert || ev.Type == runtime.APITypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				msg = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.LevelError || ev.Entry.Level == log.LevelWarning {
				msg = fmt.Sprintf("%s %s: %s %s", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL)
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errs = append(b.errs, msg)
			b.mu.Unlock()
		}
	})
	if err := chromedp.Run(ctx, log.Enable(), runtime.Enable()); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	return b
}

func (b *browser) run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v (console: %q)", what, err, b.consoleErrors())
	}
}

func (b *browser) open(url string) { b.t.Helper(); b.run("open "+url, chromedp.Navigate(url)) }

func (b *browser) eval(js string, out any) { b.t.Helper(); b.run(js, chromedp.Evaluate(js, out)) }

// wait polls the JavaScript condition until it is true; limit bounds the
// wait against a hang.
func (b *browser) wait(what string, limit time.Duration, cond string) {
	b.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var ok bool
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		err := chromedp.Run(ctx, chromedp.Evaluate(`(function () { try { return !!(`+cond+`); } catch (e) { return false; } })()`, &ok))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			var o string
			chromedp.Run(b.ctx, chromedp.Evaluate(`JSON.stringify(window.tandemDashboard && window.tandemDashboard.overview)`, &o))
			b.shot("failed.png")
			b.t.Fatalf("%s: not within %s (err %v); console %q; last overview %.3000s", what, limit, err, b.consoleErrors(), o)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shot saves a full-page screenshot as a test artefact.
func (b *browser) shot(name string) {
	b.t.Helper()
	var png []byte
	if err := chromedp.Run(b.ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Error(err)
	}
	b.t.Logf("screenshot %s", p)
}

func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// checkConsole fails the test on any console error or warning, exception
// or failed load the pages caused.
func (b *browser) checkConsole() {
	b.t.Helper()
	for _, e := range b.consoleErrors() {
		b.t.Errorf("browser: %s", e)
	}
}
