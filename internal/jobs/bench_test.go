package jobs

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkSubmit measures accepting a job: identify, read the body,
// commit it to jobs.db (fsync; concurrent submits share commits) and queue
// it. Run with -cpu to see the batching:
//
//	go test -run '^$' -bench Submit -cpu 1,16 ./internal/jobs/
func BenchmarkSubmit(b *testing.B) {
	m, err := Open(testConfig(nil, b.TempDir(), nil))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close() // never started: the jobs stay queued
	body := strings.Repeat("x", 1<<10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest("POST", "/models/iris/predict", strings.NewReader(body))
			if _, err := m.Submit(context.Background(), "iris", r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// FuzzReplay: whatever a stored record holds (a record written by an
// older tandem, or damaged), replaying it answers or fails the job; it
// never panics.
func FuzzReplay(f *testing.F) {
	f.Add("POST", "/models/iris/predict", "a=1", "X-A", "v", []byte("{}"))
	f.Add("GET", "/models/iris/%zz", "", "", "", []byte(nil))
	f.Add("", "", "%%", "Bad Header", "\r\n", []byte("x"))
	f.Add("POST", "//x/../y?z", "?&", "Host", "evil", []byte{0xff})
	m, err := Open(testConfig(nil, f.TempDir(), nil))
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	m.handler = &fakeGateway{}
	f.Fuzz(func(t *testing.T, method, path, query, hk, hv string, body []byte) {
		j := &Job{ID: "0123456789abcdef01234567", Model: "iris", Request: &Request{Method: method, Path: path, Query: query,
			Header: map[string][]string{hk: {hv}}, Body: body}}
		status, res := m.replay(context.Background(), j)
		if res == nil || (status != 0 && res.Status != status) {
			t.Fatalf("replay = %d, %+v", status, res)
		}
	})
}
