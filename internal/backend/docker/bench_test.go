package docker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// BenchmarkColdStart measures start to first answer of the fakemodel image
// three ways, interleaved in each iteration (in rotating order) so that a
// machine shared with other work loads them alike: a bare `docker run` (the
// CLI), the backend's own container created and started with the SDK alone
// (the engine's time), and the backend's Start. It reports medians in ms:
// first answer for each, the backend's phases, and the median of the
// per-iteration difference backend - sdk (what tandem adds).
//
//	go test -run '^$' -bench ColdStart -benchtime 40x ./internal/backend/docker/
func BenchmarkColdStart(b *testing.B) {
	requireEngine(b)
	cli := "docker"
	if _, err := os.Stat("/usr/bin/docker"); err == nil {
		cli = "/usr/bin/docker" // Debian's client, matching the engine
	}
	raw := rawClient(b)
	be, err := New(Config{DataDir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	m := fakeManifest("bench", nil)
	dir := b.TempDir()

	var run, sdk, tandem, added, create, start, ready []float64
	ways := []func(i int){
		func(i int) { // docker run
			port := mustFreePort(b)
			name := fmt.Sprintf("tandem-bench-run-%d", i)
			t0 := time.Now()
			out, err := exec.Command(cli, "run", "-d", "--init", "--network", "host", "--name", name,
				"-e", "PORT="+strconv.Itoa(port), FakemodelImage).CombinedOutput()
			if err != nil {
				b.Fatalf("docker run: %v\n%s", err, out)
			}
			pollReady(b, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			run = append(run, ms(time.Since(t0)))
			raw.ContainerRemove(context.Background(), name, client.ContainerRemoveOptions{Force: true})
		},
		func(i int) { // the same container through the SDK alone
			p, err := makePlan(testSpec(fmt.Sprintf("bench-sdk-%d", i), m), dir, mustFreePort(b), false)
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			c, err := raw.ContainerCreate(context.Background(), p.create)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := raw.ContainerStart(context.Background(), c.ID, client.ContainerStartOptions{}); err != nil {
				b.Fatal(err)
			}
			pollReady(b, p.addr)
			sdk = append(sdk, ms(time.Since(t0)))
			raw.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true})
		},
		func(i int) { // the backend
			id := fmt.Sprintf("bench-%d", i)
			t0 := time.Now()
			inst, err := be.Start(context.Background(), testSpec(id, m))
			if err != nil {
				b.Fatal(err)
			}
			pollReady(b, inst.Addr)
			total := time.Since(t0)
			tandem = append(tandem, ms(total))
			create = append(create, ms(inst.Phases[0].Duration))
			start = append(start, ms(inst.Phases[1].Duration))
			ready = append(ready, ms(total-inst.Phases[0].Duration-inst.Phases[1].Duration))
			be.Stop(context.Background(), id, 0)
		},
	}
	for i := 0; i < b.N; i++ {
		for k := range ways {
			ways[(i+k)%len(ways)](i)
		}
		added = append(added, tandem[i]-sdk[i])
	}
	b.ReportMetric(median(run), "ms-docker-run")
	b.ReportMetric(median(sdk), "ms-sdk")
	b.ReportMetric(median(tandem), "ms-backend")
	b.ReportMetric(median(create), "ms-create")
	b.ReportMetric(median(start), "ms-start")
	b.ReportMetric(median(ready), "ms-ready")
	b.ReportMetric(median(added), "ms-added")
	b.ReportMetric(0, "ns/op")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mustFreePort(b testing.TB) int {
	p, err := freePort()
	if err != nil {
		b.Fatal(err)
	}
	return p
}

var pollClient = &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// pollReady asks GET /health every 500µs until it answers 200.
func pollReady(b testing.TB, addr string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := pollClient.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not ready: %v", addr, err)
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// BenchmarkStartOverhead measures the backend's own work per Start and
// Stop, on the fake engine: what tandem adds to the engine's calls.
func BenchmarkStartOverhead(b *testing.B) {
	f := newFakeEngine("img:1")
	be, err := newBackend(Config{DataDir: "/data", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, f)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	m := testManifest(nil)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := "m-" + strconv.Itoa(i)
		if _, err := be.Start(context.Background(), testSpec(id, m)); err != nil {
			b.Fatal(err)
		}
		if err := be.Stop(context.Background(), id, time.Second); err != nil {
			b.Fatal(err)
		}
	}
}
