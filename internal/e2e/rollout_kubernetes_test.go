package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/testbin"
)

// clusterImage is fakemodelImage imported into the local cluster's
// containerd (pods pull nothing: IfNotPresent on a tag no registry has).
func clusterImage(t *testing.T) string {
	t.Helper()
	img := fakemodelImage(t)
	script := filepath.Join(testbin.RepoRoot(t), "hack", "local-cluster.sh")
	if out, err := exec.Command("bash", script, "load", img).CombinedOutput(); err != nil {
		t.Fatalf("hack/local-cluster.sh load %s: %v\n%s", img, err, out)
	}
	return img
}

// kubeDeployments lists the Deployments tandem manages in ns as
// "NAME=REVISION", sorted.
func kubeDeployments(t *testing.T, kc, ns string) []string {
	t.Helper()
	out, err := kubectl(t, kc, "-n", ns, "get", "deployments", "-l", "tandem.managed=true",
		"-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.tandem\.revision}{"\n"}{end}`)
	if err != nil {
		t.Fatalf("kubectl get deployments: %v %s", err, out)
	}
	l := strings.Fields(out)
	sort.Strings(l)
	return l
}

// kubeLeft lists the objects left in ns: workloads, services and config
// maps, less the CA bundle Kubernetes puts in every namespace.
func kubeLeft(t *testing.T, kc, ns string) []string {
	t.Helper()
	out, err := kubectl(t, kc, "-n", ns, "get", "deployments,replicasets,pods,services,configmaps,secrets", "-o", "name")
	if err != nil {
		t.Fatalf("kubectl get: %v %s", err, out)
	}
	var left []string
	for _, o := range strings.Fields(out) {
		if o != "configmap/kube-root-ca.crt" {
			left = append(left, o)
		}
	}
	return left
}

func fakeKubeVersion(name, image, version string) string {
	return fmt.Sprintf("name: %s\nmode: dedicated\nbackend: kubernetes\nruntime:\n  image: %s\n  env: {HOST: 0.0.0.0, FAKE_VERSION: %s}\n  health: /health\nscaling:\n  min: 1\n  max: 1\ntimeouts:\n  startup: 90s\n  grace: 2s\n",
		name, image, version)
}

// The canary split on Kubernetes: each revision with traffic has its own
// Deployment (NAME-<first 8 of its hash> beside the model's NAME); the
// split follows the weight; promote and rollback remove the Deployment of
// the revision that lost its traffic; delete leaves the namespace empty.
// Not one request fails throughout.
func TestKubernetes_CanarySplit(t *testing.T) {
	kc := needCluster(t)
	img := clusterImage(t)
	ns := kubeNamespace(t, kc)
	s := kubeServer(t, kc, ns)
	const name = "ksplit"
	unit := func(rev string) string { return name + "-" + rev[:8] }
	wantDeployments := func(what string, want ...string) {
		t.Helper()
		sort.Strings(want)
		poll(t, what, 90*time.Second,
			func() bool { return strings.Join(kubeDeployments(t, kc, ns), " ") == strings.Join(want, " ") },
			func() string { return fmt.Sprintf("deployments %v, want %v", kubeDeployments(t, kc, ns), want) })
	}

	s.deploy("", fakeKubeVersion(name, img, "v1"))
	s.waitFor("v1 ready", 120*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, name)
	v1 := s.newRevision(name)
	onlyVersion(t, "v1 alone", s.versions(20, "/models/"+name+"/version"), 20, "v1")
	wantDeployments("v1's Deployment", name+"="+v1)

	s.deployFlags(fakeKubeVersion(name, img, "v2"), "--canary", "30")
	v2 := s.newRevision(name, v1)
	s.waitRevision("v2 ready", name, v2, 120*time.Second, func(r controller.RevisionStatus) bool { return r.Ready == 1 && r.Percent == 30 })
	wantDeployments("v2's own Deployment beside v1's", name+"="+v1, unit(v2)+"="+v2)
	const n = 300
	counts := s.versions(n, "/models/"+name+"/version")
	if counts["v1"]+counts["v2"] != n {
		t.Fatalf("answers %v, want only v1 and v2", counts)
	}
	withinBinomial(t, "v2 share at --canary 30", counts["v2"], n, 0.30)

	s.mustTandem("rollout", name, "--tag", "canary="+v2)
	onlyVersion(t, "by tag in the path", s.versions(50, "/models/"+name+"@canary/version"), 50, "v2")
	onlyVersion(t, "by tag in the header", s.versions(30, "/models/"+name+"/version", controller.HeaderRevision, "canary"), 30, "v2")

	// Promote makes v2's unit the model's main one: its Deployment stays,
	// v1's (the one named as the model) goes.
	s.mustTandem("rollout", "promote", name)
	onlyVersion(t, "after promote", s.versions(100, "/models/"+name+"/version"), 100, "v2")
	wantDeployments("v1's Deployment removed after promote", unit(v2)+"="+v2)

	s.deployFlags(fakeKubeVersion(name, img, "v1"), "--canary", "50")
	s.waitRevision("v1 ready again", name, v1, 120*time.Second, func(r controller.RevisionStatus) bool { return r.Ready == 1 && r.Percent == 50 })
	wantDeployments("v1's own Deployment beside v2's", unit(v1)+"="+v1, unit(v2)+"="+v2)
	counts = s.versions(200, "/models/"+name+"/version")
	if counts["v1"]+counts["v2"] != 200 {
		t.Fatalf("answers %v, want only v1 and v2", counts)
	}
	withinBinomial(t, "v1 share at --canary 50", counts["v1"], 200, 0.50)
	s.mustTandem("rollout", "rollback", name)
	onlyVersion(t, "after rollback", s.versions(100, "/models/"+name+"/version"), 100, "v2")
	wantDeployments("v1's Deployment removed after rollback", unit(v2)+"="+v2)

	s.mustTandem("delete", name)
	poll(t, "nothing left in the namespace after delete", 90*time.Second,
		func() bool { return len(kubeLeft(t, kc, ns)) == 0 },
		func() string { return strings.Join(kubeLeft(t, kc, ns), " ") })
}
