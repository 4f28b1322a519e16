package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/controller"
)

// Two tandem processes share one cluster and one deployment
// (target_concurrency 1), each receiving half of a load of concurrency 8.
// The follower reports its half to the leader (internal/peerstats), so the
// leader scales to 8 replicas, not the 4 its own traffic calls for (what
// it reached, 4 and once 5, with the follower's reports refused), and
// counts nothing twice.
func TestKubernetes_PeerStatsTwoTandems(t *testing.T) {
	kc := needCluster(t)
	ns := kubeNamespace(t, kc)
	a := kubeServer(t, kc, ns)
	b := kubeServer(t, kc, ns)
	leader, follower := leaderOf(t, kc, ns, a, b)
	// The leader published where to reach it: its control API.
	if out, _ := kubectl(t, kc, "-n", ns, "get", "lease", "tandem-leader", "-o", `jsonpath={.metadata.annotations.tandem\.peer-addr}`); out != leader.admin {
		t.Fatalf("the Lease names peer address %q, want the leader's control API %s", out, leader.admin)
	}

	const name, perTandem, want = "kpeers", 4, 8
	leader.deploy("", fakeKube(name, "dedicated", "min: 1\nmax: 12\ntarget_concurrency: 1\nstable_window: 6s\npanic_window: 2s"))
	leader.waitFor("one ready", 60*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, name)
	deadline := time.Now().Add(30 * time.Second)
	for follower.call("GET", "/models/"+name+"/echo", "").code != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the follower never served the deployment made through the leader")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Concurrency 4 at each tandem: each client sends its next request as
	// soon as the last is answered.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for _, s := range []*server{leader, follower} {
		for range perTandem {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.gateway+"/models/"+name+"/sleep?d=1s", nil)
					resp, err := client.Do(req)
					switch {
					case err != nil:
						if ctx.Err() == nil {
							failed.Add(1)
							time.Sleep(50 * time.Millisecond)
						}
					default:
						resp.Body.Close()
						if resp.StatusCode == 200 {
							ok.Add(1)
						} else {
							failed.Add(1)
						}
					}
				}
			}()
		}
	}
	stopLoad := func() { cancel(); wg.Wait() }
	defer stopLoad()

	most := 0
	deadline = time.Now().Add(120 * time.Second)
	for {
		n := replicasOf(t, kc, ns, name)
		most = max(most, n)
		if n >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas = %d (most %d) under a load of %d split over two tandems, want %d\nleader:\n%s\nfollower:\n%s",
				n, most, perTandem*2, want, tail(leader.log.String(), 40), tail(follower.log.String(), 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
	st := leader.waitFor("8 ready", 120*time.Second, func(st *controller.Status) bool { return st.Ready >= want }, name)
	now := replicasOf(t, kc, ns, name)
	most = max(most, now)
	stopLoad()
	t.Logf("replicas %d under load (most %d; the leader: %d ready, %d desired); %d requests answered, %d failed",
		now, most, st.Ready, st.Desired, ok.Load(), failed.Load())
	// A client's next request can reach the pool a moment before the last
	// one's release is counted, so the average may top 8 by a hair (9);
	// counting the follower twice, or the leader's own traffic as a
	// peer's, would reach 12.
	if most > want+1 {
		t.Errorf("most replicas = %d, want %d (a load of %d at target 1): traffic counted twice", most, want, perTandem*2)
	}
	if !strings.Contains(leader.log.String(), "peer stats: a tandem process reports its traffic") {
		t.Errorf("the leader never took a report from the follower:\n%s", tail(leader.log.String(), 40))
	}
	if strings.Contains(follower.log.String(), "msg=scaled") {
		t.Errorf("the follower changed replicas:\n%s", tail(follower.log.String(), 40))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
