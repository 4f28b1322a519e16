package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// Labels this backend adds to backend's own (tandem.managed and the rest).
const (
	// LabelDataDir holds the absolute data directory of the tandem process
	// that started the container: Recover adopts only its own, so that two
	// tandem processes (or two test packages) can share one engine.
	LabelDataDir = "tandem.data-dir"
	// LabelHostPort holds the host port of a container on the host network,
	// which the engine does not report.
	LabelHostPort = "tandem.host-port"
)

// DefaultContainerPort is the port a container listens on when the manifest
// gives no runtime.port and the port is published (not host networking).
const DefaultContainerPort = 8080

// plan is what Start asks of the engine for one spec.
type plan struct {
	create client.ContainerCreateOptions
	// addr is the instance's address when it is known before start (host
	// networking); empty when the engine picks the published host port.
	addr string
	// port is the published container port to look up after start.
	port network.Port
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)

// containerName names an instance's container after tandem's data directory
// and the instance id, so that the name is unique on a shared engine and an
// instance is never started twice.
func containerName(dataDir, id string) string {
	sum := sha256.Sum256([]byte(dataDir))
	return "tandem-" + hex.EncodeToString(sum[:4]) + "-" + unsafeName.ReplaceAllString(id, "_")
}

// makePlan turns a spec into the engine's create request. hostPort is the
// free host port for host networking (ignored when publishing); nvidia says
// whether the engine has an NVIDIA runtime for resources.gpus.
func makePlan(spec backend.Spec, dataDir string, hostPort int, nvidia bool) (plan, error) {
	m := spec.Manifest
	if m == nil {
		return plan{}, fmt.Errorf("spec %q has no manifest", spec.ID)
	}
	rt := m.Runtime
	if rt.Image == "" {
		return plan{}, fmt.Errorf("runtime.image is required by the docker backend")
	}
	labels := map[string]string{
		backend.LabelManaged:    "true",
		backend.LabelDeployment: spec.Deployment,
		backend.LabelRevision:   spec.Revision,
		backend.LabelInstance:   spec.ID,
		LabelDataDir:            dataDir,
	}
	env := map[string]string{}
	for k, v := range rt.Env {
		env[k] = v
	}
	for k, v := range spec.Env {
		env[k] = v
	}

	var p plan
	initProcess := true
	hc := &container.HostConfig{
		// The engine's init (tini) runs as PID 1: it forwards the stop signal
		// and reaps zombies, and the program is killed by SIGTERM as it would
		// be outside a container (a PID 1 program that does not handle
		// SIGTERM would otherwise ignore it), so exits read the same on every
		// backend.
		Init: &initProcess,
		// Bounded logs: tandem logs reads them back; the daemon's own default
		// may be a driver that cannot be read.
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "2"}},
	}
	for _, mt := range spec.Mounts {
		bind := mt.Source + ":" + mt.Target
		if mt.ReadOnly {
			bind += ":ro"
		}
		hc.Binds = append(hc.Binds, bind)
	}
	cfg := &container.Config{Labels: labels}
	switch rt.Network {
	case "host":
		// The program listens on 127.0.0.1:$PORT of the host; a program that
		// ignores $PORT listens on runtime.port (one instance per machine).
		port := hostPort
		if rt.Port != 0 {
			port = rt.Port
		}
		if port <= 0 || port > 65535 {
			return plan{}, fmt.Errorf("no host port for host networking")
		}
		env["PORT"] = strconv.Itoa(port)
		labels[LabelHostPort] = strconv.Itoa(port)
		hc.NetworkMode = "host"
		p.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	case "":
		// Publish the container port on the host's loopback; the engine picks
		// a free host port, read back after start. The program must listen on
		// all of the container's interfaces (0.0.0.0:$PORT), not 127.0.0.1.
		port := DefaultContainerPort
		if rt.Port != 0 {
			port = rt.Port
		}
		env["PORT"] = strconv.Itoa(port)
		cp, err := network.ParsePort(strconv.Itoa(port) + "/tcp")
		if err != nil {
			return plan{}, fmt.Errorf("runtime.port: %w", err)
		}
		cfg.ExposedPorts = network.PortSet{cp: {}}
		hc.PortBindings = network.PortMap{cp: {{HostIP: netip.MustParseAddr("127.0.0.1")}}}
		p.port = cp
	default:
		return plan{}, fmt.Errorf("runtime.network %q is not a network mode (host, or empty to publish on 127.0.0.1)", rt.Network)
	}

	cfg.Env = make([]string, 0, len(env))
	for k, v := range env {
		cfg.Env = append(cfg.Env, k+"="+v)
	}
	slices.Sort(cfg.Env)
	// runtime.command replaces the image's entrypoint (and with it the
	// image's CMD, as `docker run --entrypoint` does); runtime.args replace CMD.
	if len(rt.Command) > 0 {
		cfg.Entrypoint = slices.Clone(rt.Command)
	}
	if len(rt.Args) > 0 {
		cfg.Cmd = slices.Clone(rt.Args)
	}
	// runtime.workdir is a folder on tandem's machine (made absolute against
	// the manifest's folder), not in the image: the image's WORKDIR applies.

	res := m.Resources
	if res.Memory > 0 {
		hc.Memory = int64(res.Memory)
		// No swap beyond the limit: going past it is an out-of-memory kill,
		// not a slow instance.
		hc.MemorySwap = int64(res.Memory)
	}
	if res.CPU > 0 {
		hc.NanoCPUs = int64(math.Round(res.CPU * 1e9))
	}
	if res.GPUs > 0 {
		if !nvidia {
			return plan{}, fmt.Errorf("resources.gpus is %d but the engine has no NVIDIA runtime (install the NVIDIA Container Toolkit)", res.GPUs)
		}
		hc.DeviceRequests = []container.DeviceRequest{{Count: res.GPUs, Capabilities: [][]string{{"gpu"}}}}
	}

	p.create = client.ContainerCreateOptions{
		Name:       containerName(dataDir, spec.ID),
		Image:      rt.Image,
		Config:     cfg,
		HostConfig: hc,
	}
	return p, nil
}

// usesHostNetwork reports whether a manifest runs its containers on the host
// network, where the backend must find a free port itself.
func usesHostNetwork(m *manifest.Manifest) bool {
	return m != nil && m.Runtime.Network == "host" && m.Runtime.Port == 0
}
