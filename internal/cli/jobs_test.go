package cli

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tandem/internal/api"
	"tandem/internal/jobs"
	"tandem/internal/metrics"
)

// jobsServer is a control API with the jobs' routes over an empty store
// and one failed job.
func jobsServer(t *testing.T) (string, string) {
	t.Helper()
	m, err := jobs.Open(jobs.Config{DataDir: t.TempDir(),
		Identify: func(context.Context, string, http.Header) (string, bool, error) { return "acme", true, nil }})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(400) }))
	t.Cleanup(func() { m.Close() })
	s := api.NewServer(nil, metrics.New(), api.Info{}, slog.New(slog.DiscardHandler))
	m.Mount(s.Handle)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	id, err := m.Submit(context.Background(), "iris", httptest.NewRequest("POST", "/models/iris/predict", strings.NewReader("{}")))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if j, err := m.Get(id); err == nil && j.Status.Final() {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return hs.URL, id
}

func TestJobsCmd(t *testing.T) {
	admin, id := jobsServer(t)
	tests := []struct {
		args []string
		want string // in the output
		code int
	}{
		{[]string{"jobs", "ls"}, id + "  iris   failed  1", ExitOK},
		{[]string{"jobs", "ls", "--failed", "-o", "json"}, `"id": "` + id + `"`, ExitOK},
		{[]string{"jobs", "ls", "--status", "succeeded"}, "ID", ExitOK},
		{[]string{"jobs", "get", id}, "the function answered 400", ExitOK},
		{[]string{"jobs", "get", "0123"}, "not found", ExitRuntime},
		{[]string{"jobs", "ls", "--status", "done"}, `--status "done": use queued, running, succeeded or failed`, ExitUsage},
		{[]string{"jobs", "ls", "--failed", "--status", "queued"}, "contradict", ExitUsage},
		{[]string{"jobs", "ls", "-o", "xml"}, "want one of", ExitUsage},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := run(t, admin, tt.args...)
			if code := ExitCode(err); code != tt.code || !strings.Contains(out+errText(err), tt.want) {
				t.Errorf("exit %d, output:\n%s%v\nwant exit %d and %q", code, out, err, tt.code, tt.want)
			}
		})
	}
	out, _ := run(t, admin, "jobs", "ls", "--status", "succeeded")
	if strings.Contains(out, id) {
		t.Errorf("--status succeeded lists the failed job:\n%s", out)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
