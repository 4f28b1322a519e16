// Package manifest defines a tandem deployment manifest: its types, the
// defaults (in one place, SetDefaults), strict YAML decoding that reports
// every problem with its field path, and Validate.
package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Mode says how a deployment trades cold starts for idle cost.
type Mode string

const (
	// Serverless deployments scale to zero after scaling.idle_timeout.
	Serverless Mode = "serverless"
	// Dedicated deployments keep at least scaling.min (>= 1) instances warm.
	Dedicated Mode = "dedicated"
	// Hybrid deployments keep a floor of scaling.min (>= 1) instances warm,
	// billed as reserved capacity, and start burst instances up to
	// scaling.max on demand, billed as on-demand, that stop after
	// scaling.idle_timeout without overflow traffic.
	Hybrid Mode = "hybrid"
)

// Backend names.
const (
	BackendProcess    = "process"
	BackendDocker     = "docker"
	BackendKubernetes = "kubernetes"
)

// Manifest is one deployment as a user writes it.
type Manifest struct {
	Name      string    `yaml:"name" json:"name"`
	Mode      Mode      `yaml:"mode" json:"mode"`
	Backend   string    `yaml:"backend,omitempty" json:"backend,omitempty"`
	Runtime   Runtime   `yaml:"runtime" json:"runtime"`
	Scaling   Scaling   `yaml:"scaling" json:"scaling"`
	Timeouts  Timeouts  `yaml:"timeouts" json:"timeouts"`
	Resources Resources `yaml:"resources" json:"resources"`
	Batching  *Batching `yaml:"batching,omitempty" json:"batching,omitempty"`
	// OpenAI, when set, says the instances speak the OpenAI API, and the
	// gateway's /v1/ routes send them the requests naming this model.
	OpenAI *OpenAI `yaml:"openai,omitempty" json:"openai,omitempty"`
	// Cache, when set, turns on the gateway's response cache (cache.go).
	Cache *Cache `yaml:"cache,omitempty" json:"cache,omitempty"`
	// Burst runs a hybrid deployment's burst tier on another backend.
	Burst *Burst `yaml:"burst,omitempty" json:"burst,omitempty"`
	// Async, when set, tunes the retries and destinations of the
	// deployment's asynchronous invocations (async.go).
	Async *Async `yaml:"async,omitempty" json:"async,omitempty"`
	// Prewarm raises the deployment's floor ahead of expected traffic:
	// scheduled windows and a predictive learner (prewarm.go).
	Prewarm []Prewarm `yaml:"prewarm,omitempty" json:"prewarm,omitempty"`
	// Fallback names another deployment that answers a request whose
	// deadline is shorter than this one's expected cold start, when that
	// deployment has a warm instance (docs/hybrid.md, "Deadlines").
	Fallback string `yaml:"fallback,omitempty" json:"fallback,omitempty"`
	// Rollout, when set, makes a deploy that changes the spec a progressive
	// rollout of the new revision (rollout.go).
	Rollout *Rollout `yaml:"rollout,omitempty" json:"rollout,omitempty"`
}

// Burst is where a hybrid deployment's burst instances run when not on
// the deployment's own backend (processes spilling over to Docker, say).
type Burst struct {
	Backend string `yaml:"backend" json:"backend"`
	// Image is the burst tier's container image (default runtime.image);
	// runtime.command and workdir, which describe the floor's program, do
	// not apply to it.
	Image string `yaml:"image,omitempty" json:"image,omitempty"`
	// Network is the burst containers' network mode: "" or "host".
	Network string `yaml:"network,omitempty" json:"network,omitempty"`
}

// BurstManifest returns the manifest a hybrid deployment's burst instances
// run with: m itself, or, with a burst block, m on the burst backend with
// the burst image. m must have its defaults set.
func (m *Manifest) BurstManifest() *Manifest {
	if m.Burst == nil {
		return m
	}
	c := *m
	c.Backend = m.Burst.Backend
	c.Burst = nil
	if m.Burst.Image != "" || m.Burst.Backend == BackendDocker {
		c.Runtime.Command, c.Runtime.Workdir = nil, ""
	}
	if m.Burst.Image != "" {
		c.Runtime.Image = m.Burst.Image
	}
	if m.Burst.Backend == BackendProcess {
		c.Runtime.Image, c.Runtime.Network = "", ""
	} else {
		c.Runtime.Network = m.Burst.Network
	}
	return &c
}

// Runtime says what program serves the model and how to reach it.
type Runtime struct {
	// Command is any program that serves HTTP on $PORT (process backend), or
	// the command that overrides an image's entrypoint (docker).
	Command []string `yaml:"command,omitempty" json:"command,omitempty"`
	// Args are appended to the image's entrypoint (docker).
	Args []string `yaml:"args,omitempty" json:"args,omitempty"`
	// Workdir is relative to the manifest's folder; Parse makes it absolute.
	Workdir string            `yaml:"workdir,omitempty" json:"workdir,omitempty"`
	Env     map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	// Health is the readiness path; empty means ready when the port accepts.
	Health string `yaml:"health,omitempty" json:"health,omitempty"`
	// Port is a fixed port for programs that ignore $PORT.
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
	// Image is a container image (docker, kubernetes).
	Image string `yaml:"image,omitempty" json:"image,omitempty"`
	// Network is the container network mode: "" (publish on 127.0.0.1) or "host".
	Network string `yaml:"network,omitempty" json:"network,omitempty"`
	// ONNX is a model file served by tandem's built-in runtime.
	ONNX string `yaml:"onnx,omitempty" json:"onnx,omitempty"`
	// Threads is the built-in runtime's intra-op thread count.
	Threads int `yaml:"threads,omitempty" json:"threads,omitempty"`
	// Lambda runs a Lambda-compatible function behind tandem's Runtime API.
	Lambda *Lambda `yaml:"lambda,omitempty" json:"lambda,omitempty"`
	// WSGI names a Python WSGI app as "module:attr" (Flask's app:app).
	WSGI string `yaml:"wsgi,omitempty" json:"wsgi,omitempty"`
	// ASGI names a Python ASGI app as "module:attr" (FastAPI's main:app).
	ASGI string `yaml:"asgi,omitempty" json:"asgi,omitempty"`
	// Python is the interpreter of a wsgi or asgi app; empty means the
	// first python3 on PATH.
	Python string `yaml:"python,omitempty" json:"python,omitempty"`
	// Template keeps a process that has imported a Python handler or app,
	// and starts each instance as a fork of it.
	Template *Template `yaml:"template,omitempty" json:"template,omitempty"`
}

// Lambda is a function run through the Lambda Runtime API: either a custom
// runtime's program (Command, such as ./bootstrap) or a Python handler
// ("module.function") that tandem's own bootstrap calls.
type Lambda struct {
	Command []string `yaml:"command,omitempty" json:"command,omitempty"`
	Handler string   `yaml:"handler,omitempty" json:"handler,omitempty"`
	// Python is the interpreter of a handler; empty means the first
	// python3 on PATH.
	Python string `yaml:"python,omitempty" json:"python,omitempty"`
	// Event is the shape a gateway request takes: apigw-v1 (default) or
	// apigw-v2.
	Event string `yaml:"event,omitempty" json:"event,omitempty"`
}

// Lambda event shapes.
const (
	EventAPIGWv1 = "apigw-v1"
	EventAPIGWv2 = "apigw-v2"
)

// Template configures a deployment's template process.
type Template struct {
	// Keep drops the template after this long without a fork (default 1h).
	Keep Duration `yaml:"keep,omitempty" json:"keep,omitempty"`
}

// Scaling holds the autoscaler's knobs.
type Scaling struct {
	// Min is a pointer so that "unset" can default per mode.
	Min *int `yaml:"min,omitempty" json:"min,omitempty"`
	Max int  `yaml:"max,omitempty" json:"max,omitempty"`
	// TargetConcurrency is the in-flight requests per instance aimed for.
	TargetConcurrency float64 `yaml:"target_concurrency,omitempty" json:"target_concurrency,omitempty"`
	// ContainerConcurrency is a hard limit of in-flight requests per
	// instance; 0 means no limit.
	ContainerConcurrency int      `yaml:"container_concurrency,omitempty" json:"container_concurrency,omitempty"`
	IdleTimeout          Duration `yaml:"idle_timeout,omitempty" json:"idle_timeout,omitempty"`
	MaxQueue             int      `yaml:"max_queue,omitempty" json:"max_queue,omitempty"`
	StableWindow         Duration `yaml:"stable_window,omitempty" json:"stable_window,omitempty"`
	PanicWindow          Duration `yaml:"panic_window,omitempty" json:"panic_window,omitempty"`
	// PanicThreshold is the ratio of panic-window demand to current size
	// that starts panic mode.
	PanicThreshold float64 `yaml:"panic_threshold,omitempty" json:"panic_threshold,omitempty"`
}

// MinInstances returns the effective minimum (defaults applied).
func (s Scaling) MinInstances() int {
	if s.Min == nil {
		return 0
	}
	return *s.Min
}

// Timeouts bound waiting.
type Timeouts struct {
	// Startup bounds exec-to-ready; an instance not ready by then is killed.
	Startup Duration `yaml:"startup,omitempty" json:"startup,omitempty"`
	// Request bounds one proxied request.
	Request Duration `yaml:"request,omitempty" json:"request,omitempty"`
	// Grace is the time between SIGTERM and SIGKILL when stopping.
	Grace Duration `yaml:"grace,omitempty" json:"grace,omitempty"`
	// Deadline is how long a request may wait for a cold start when it
	// does not say (X-Tandem-Deadline, or gRPC's deadline); 0 is no
	// deadline: requests wait for the start as long as timeouts.startup.
	Deadline Duration `yaml:"deadline,omitempty" json:"deadline,omitempty"`
}

// Resources are per-instance limits.
type Resources struct {
	CPU    float64  `yaml:"cpu,omitempty" json:"cpu,omitempty"`
	Memory ByteSize `yaml:"memory,omitempty" json:"memory,omitempty"`
	GPUs   int      `yaml:"gpus,omitempty" json:"gpus,omitempty"`
}

// Batching turns on dynamic batching of v2 inference requests.
type Batching struct {
	MaxBatchSize int      `yaml:"max_batch_size,omitempty" json:"max_batch_size,omitempty"`
	MaxDelay     Duration `yaml:"max_delay,omitempty" json:"max_delay,omitempty"`
}

// OpenAI marks a deployment whose instances serve the OpenAI API
// (/v1/chat/completions, /v1/completions, /v1/embeddings): llama.cpp's
// server, vLLM, Ollama. `openai: {}` turns it on.
type OpenAI struct {
	// Models are more names than the deployment's own that a request's
	// "model" field may give to reach it (aliases such as "gpt-4o-mini"
	// or "llama3.1:8b"). Each is unique among the deployments a server
	// runs: a deploy that would reuse one is refused.
	Models []string `yaml:"models,omitempty" json:"models,omitempty"`
}

// OpenAINames returns the names OpenAI clients may send to reach this
// deployment: its own name, then its aliases; nil without an openai block.
func (m *Manifest) OpenAINames() []string {
	if m.OpenAI == nil {
		return nil
	}
	return append([]string{m.Name}, m.OpenAI.Models...)
}

// Duration is a time.Duration written as "30s" in YAML and JSON.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string such as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a string such as "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalText reads a string such as "30s" (used by the YAML decoder).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Hash returns a short digest of the manifest's content. Instances started
// from one hash are interchangeable; a change of hash means a new revision.
func (m *Manifest) Hash() string {
	b, _ := json.Marshal(m)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:12]
}

// Load reads and parses a manifest file, resolving relative paths against
// the file's folder.
func Load(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, filepath.Dir(abs))
}
