package dashboard_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/dashboard"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
)

type idleBusy struct{}

func (idleBusy) BusyTime(time.Time) time.Duration { return 0 }

// BenchmarkDashboard_Sample is one second's sample with 10 deployments,
// each with a day of per-minute cost buckets (what Report reads back every
// second) and a metrics registry.
func BenchmarkDashboard_Sample(b *testing.B) {
	start := time.Now().Add(-24 * time.Hour)
	meter, err := cost.Open(b.TempDir(), cost.DefaultPrices(), slog.New(slog.DiscardHandler), start)
	if err != nil {
		b.Fatal(err)
	}
	defer meter.Close(time.Now())
	deps := &fakeDeployments{}
	for i := range 10 {
		name := fmt.Sprintf("m%d", i)
		meter.Deployment(&manifest.Manifest{Name: name, Mode: manifest.Serverless}, start)
		meter.InstanceStarting(name, name+"-1", start)
		meter.InstanceReady(name, name+"-1", idleBusy{}, start)
		deps.sts = append(deps.sts, &controller.Status{Name: name, Mode: manifest.Serverless, Backend: "process", Revision: "r1", Ready: 1})
	}
	now := start
	for range 24 * 60 {
		now = now.Add(time.Minute)
		meter.Flush(now)
	}
	if err := meter.Persist(now); err != nil {
		b.Fatal(err)
	}
	m := metrics.New()
	d := dashboard.New(dashboard.Config{Deployments: deps, Costs: meter, Metrics: m.Registry})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d.Sample(now.Add(time.Duration(i) * time.Second))
	}
}
