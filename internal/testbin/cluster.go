package testbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// FindCluster returns the kubeconfig of the cluster the Kubernetes tests
// run against: $TANDEM_KUBECONFIG when set; else hack/local-cluster.sh's,
// brought up when CI=true, or used when it is already up. It returns ""
// (and no error) outside CI when no cluster is up: the tests skip. Call it
// from TestMain (it may take minutes in CI).
func FindCluster() (string, error) {
	if k := os.Getenv("TANDEM_KUBECONFIG"); k != "" {
		return k, nil
	}
	root, err := clusterRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "hack", "local-cluster.sh")
	if os.Getenv("CI") == "true" {
		cmd := exec.Command(script, "up")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("hack/local-cluster.sh up: %w", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return lines[len(lines)-1], nil
	}
	if exec.Command(script, "status").Run() != nil {
		return "", nil // not up: the cluster tests skip
	}
	out, err := exec.Command(script, "kubeconfig").Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// clusterRoot is RepoRoot for a TestMain, which has no testing.TB.
func clusterRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("repository root not found")
	}
	return filepath.Join(filepath.Dir(file), "..", ".."), nil
}
