package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"tandem/internal/controller"
)

// revisionContainers lists the running containers of one revision of a
// model (every unit of a model labels its containers with the model's name).
func revisionContainers(t *testing.T, name, rev string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-q", "--no-trunc", "--filter", "label=tandem.managed=true",
		"--filter", "label=tandem.deployment="+name, "--filter", "label=tandem.revision="+rev).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// removeContainers removes whatever containers of a model a failed test
// left, running or not.
func removeContainers(t *testing.T, name string) {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=tandem.managed=true", "--filter", "label=tandem.deployment="+name).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
	}
}

// A canary on Docker: 30% of the requests reach the new revision, a tag
// reaches it always, promote moves everything to it and stops the old
// containers, a second canary rolled back leaves only the promoted one.
// Not one request fails throughout.
func TestDocker_CanarySplit(t *testing.T) {
	needDocker(t)
	img := fakemodelImage(t)
	const name = "dsplit"
	t.Cleanup(func() { removeContainers(t, name) }) // after the server stops
	s := startServer(t, "")
	v := func(version string) string {
		return dockerManifest(name, "dedicated", img, "min: 1\nmax: 1", map[string]string{"FAKE_VERSION": version})
	}

	s.deploy("", v("v1"))
	s.waitFor("v1 ready", 90*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, name)
	v1 := s.newRevision(name)
	onlyVersion(t, "v1 alone", s.versions(20, "/models/"+name+"/version"), 20, "v1")

	s.deployFlags(v("v2"), "--canary", "30")
	v2 := s.newRevision(name, v1)
	s.waitRevision("v2 ready", name, v2, 90*time.Second, func(r controller.RevisionStatus) bool { return r.Ready == 1 && r.Percent == 30 })
	if c := revisionContainers(t, name, v2); len(c) != 1 {
		t.Fatalf("v2 containers %v, want 1", c)
	}
	const n = 400
	counts := s.versions(n, "/models/"+name+"/version")
	if counts["v1"]+counts["v2"] != n {
		t.Fatalf("answers %v, want only v1 and v2", counts)
	}
	withinBinomial(t, "v2 share at --canary 30", counts["v2"], n, 0.30)

	s.mustTandem("rollout", name, "--tag", "canary="+v2)
	onlyVersion(t, "by tag in the path", s.versions(50, "/models/"+name+"@canary/version"), 50, "v2")
	onlyVersion(t, "by tag in the header", s.versions(50, "/models/"+name+"/version", controller.HeaderRevision, "canary"), 50, "v2")
	onlyVersion(t, "by revision in the header", s.versions(20, "/models/"+name+"/version", controller.HeaderRevision, v1), 20, "v1")

	s.mustTandem("rollout", "promote", name)
	onlyVersion(t, "after promote", s.versions(100, "/models/"+name+"/version"), 100, "v2")
	poll(t, "v1 containers gone after promote", 90*time.Second,
		func() bool { return len(revisionContainers(t, name, v1)) == 0 },
		func() string { return strings.Join(revisionContainers(t, name, v1), " ") })
	if c := revisionContainers(t, name, v2); len(c) != 1 {
		t.Fatalf("v2 containers after promote %v, want the one it had", c)
	}

	s.deployFlags(v("v1"), "--canary", "50")
	s.waitRevision("v1 ready again", name, v1, 90*time.Second, func(r controller.RevisionStatus) bool { return r.Ready == 1 && r.Percent == 50 })
	counts = s.versions(200, "/models/"+name+"/version")
	if counts["v1"]+counts["v2"] != 200 {
		t.Fatalf("answers %v, want only v1 and v2", counts)
	}
	withinBinomial(t, "v1 share at --canary 50", counts["v1"], 200, 0.50)
	s.mustTandem("rollout", "rollback", name)
	onlyVersion(t, "after rollback", s.versions(100, "/models/"+name+"/version"), 100, "v2")
	poll(t, "v1 containers gone after rollback", 90*time.Second,
		func() bool { return len(revisionContainers(t, name, v1)) == 0 },
		func() string { return strings.Join(revisionContainers(t, name, v1), " ") })

	s.mustTandem("delete", name)
	poll(t, "no container left after delete", 60*time.Second,
		func() bool { return len(managedContainers(t, name)) == 0 },
		func() string { return strings.Join(managedContainers(t, name), " ") })
}
