package kubernetes

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"tandem/internal/backend"
)

// BenchmarkScaleFromZero measures scale 0 -> 1 to the first answered
// request on the test cluster, split into phases seen from tandem's side:
// the scale call, the pod created, scheduled, its IP in its status, its
// container started, the pod Ready, the endpoint in Watch, and the first
// answer. Each metric is milliseconds since Scale was called (ms-scale is
// the call itself). "listens-after-1s" is a server that loads for a second
// before it listens, as model servers do.
//
//	go test -run '^$' -bench ScaleFromZero -benchtime 5x ./internal/backend/kubernetes/
func BenchmarkScaleFromZero(b *testing.B) {
	needCluster(b)
	loadImages(b)
	for _, tt := range []struct {
		name, image, path string
		hostNetwork       bool
		env               map[string]string
	}{
		{"host-network/fakemodel", fakemodelImage, "/pid", true, nil},
		{"pod-network/podserver", podserverImage, "/name", false, nil},
		{"pod-network/podserver-listens-after-1s", podserverImage, "/name", false, map[string]string{"LISTEN_AFTER": "1s"}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			ctx := b.Context()
			be := newClusterBackend(b, Config{HostNetwork: tt.hostNetwork, Logger: discardLogger()})
			name := uniqueName("bench")
			spec := specFor(b, be, name, tt.image, "")
			if tt.env != nil {
				spec.Manifest.Runtime.Env = tt.env
				spec.Revision = spec.Manifest.Hash()
			}
			if err := be.Apply(ctx, spec); err != nil {
				b.Fatal(err)
			}
			w, err := be.Watch(ctx, name)
			if err != nil {
				b.Fatal(err)
			}
			<-w
			client := clusterClient(b)
			httpc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
			phases := map[string][]float64{}
			b.ResetTimer()
			for range b.N {
				pw, err := client.CoreV1().Pods(DefaultNamespace).Watch(ctx, metav1.ListOptions{LabelSelector: backend.LabelDeployment + "=" + name})
				if err != nil {
					b.Fatal(err)
				}
				seen := make(chan map[string]time.Time, 1)
				go func() { seen <- podPhases(pw.ResultChan()) }()

				// Start at a random point of the kubelet's once-a-second
				// relist, as traffic would.
				b.StopTimer()
				time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
				b.StartTimer()
				start := time.Now()
				if err := be.Scale(ctx, name, 1); err != nil {
					b.Fatal(err)
				}
				scaled := time.Now()
				set := waitSet(b, w, readyWithin, "ready endpoint", func(s []backend.Instance) bool { return len(s) == 1 })
				endpoint := time.Now()
				var answered time.Time
				for answered.IsZero() {
					resp, err := httpc.Get("http://" + set[0].Addr + tt.path)
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == 200 {
							answered = time.Now()
						}
					}
				}
				b.StopTimer()
				// The kubelet's view (started, Ready) may come after the
				// answer: wait for it outside the timed part.
				var ps map[string]time.Time
				select {
				case ps = <-seen:
				case <-time.After(10 * time.Second):
					pw.Stop()
					ps = <-seen
				}
				pw.Stop()

				ms := func(t time.Time) float64 { return float64(t.Sub(start).Microseconds()) / 1000 }
				phases["ms-scale"] = append(phases["ms-scale"], ms(scaled))
				for _, p := range []string{"created", "scheduled", "ip", "started", "ready"} {
					if t, ok := ps[p]; ok {
						phases["ms-"+p] = append(phases["ms-"+p], ms(t))
					}
				}
				phases["ms-endpoint"] = append(phases["ms-endpoint"], ms(endpoint))
				// What tandem adds after the kubelet reports the pod's IP,
				// whatever the load did to the steps before.
				if t, ok := ps["ip"]; ok {
					phases["ms-ip-to-endpoint"] = append(phases["ms-ip-to-endpoint"], float64(endpoint.Sub(t).Microseconds())/1000)
				}
				phases["ms-answered"] = append(phases["ms-answered"], ms(answered))

				if err := be.Scale(ctx, name, 0); err != nil {
					b.Fatal(err)
				}
				waitSet(b, w, goneWithin, "no endpoint", func(s []backend.Instance) bool { return len(s) == 0 })
				waitNoPods(b, ctx, name)
				b.StartTimer()
			}
			for k, v := range phases {
				b.ReportMetric(median(v), k)
			}
		})
	}
}

// podPhases records when the pod was first seen created, scheduled, with
// an IP, with its container running, and Ready; it returns once Ready or
// when the watch stops.
func podPhases(events <-chan watch.Event) map[string]time.Time {
	out := map[string]time.Time{}
	mark := func(k string) {
		if _, ok := out[k]; !ok {
			out[k] = time.Now()
		}
	}
	for ev := range events {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type == watch.Deleted || p.DeletionTimestamp != nil {
			continue
		}
		mark("created")
		if p.Spec.NodeName != "" {
			mark("scheduled")
		}
		if p.Status.PodIP != "" {
			mark("ip")
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running != nil {
				mark("started")
			}
		}
		if podReady(p) {
			mark("ready")
			return out
		}
	}
	return out
}

func waitNoPods(b *testing.B, ctx context.Context, name string) {
	c := clusterClient(b)
	deadline := time.Now().Add(goneWithin)
	for {
		pods, err := c.CoreV1().Pods(DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: backend.LabelDeployment + "=" + name})
		if err != nil {
			b.Fatal(err)
		}
		if len(pods.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("pods of %s still there after %s", name, goneWithin)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
