package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a manifest.
type Problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Message
	}
	return p.Field + ": " + p.Message
}

// Error lists every problem found in a manifest.
type Error struct {
	Problems []Problem `json:"problems"`
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid manifest: " + strings.Join(parts, "; ")
}

// ErrInvalid is matched by errors.Is for every *Error.
var ErrInvalid = errors.New("invalid manifest")

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Parse decodes a YAML (or JSON) manifest strictly, applies defaults, makes
// paths absolute against baseDir and validates. On failure it returns an
// *Error that lists every problem with its field path.
func Parse(data []byte, baseDir string) (*Manifest, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, &Error{Problems: []Problem{{Message: "not valid YAML: " + err.Error()}}}
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	var probs []Problem
	if !checkNode(doc, reflect.TypeOf(Manifest{}), "", &probs) && doc.Kind != yaml.MappingNode {
		return nil, &Error{Problems: probs}
	}
	// checkNode dropped the fields it complained about, so what is left
	// decodes, and Validate can add its own problems to the list.
	var m Manifest
	if err := doc.Decode(&m); err != nil {
		return nil, &Error{Problems: append(probs, Problem{Message: err.Error()})}
	}
	m.resolvePaths(baseDir)
	m.SetDefaults()
	if err := m.Validate(); err != nil {
		var verr *Error
		if errors.As(err, &verr) {
			for _, p := range verr.Problems {
				if !covered(probs, p.Field) {
					probs = append(probs, p)
				}
			}
		}
	}
	if len(probs) > 0 {
		return nil, &Error{Problems: probs}
	}
	return &m, nil
}

// covered reports whether field, a field holding it or a field inside it
// already has a problem.
func covered(probs []Problem, field string) bool {
	within := func(inner, outer string) bool {
		return inner == outer || strings.HasPrefix(inner, outer+".") || strings.HasPrefix(inner, outer+"[")
	}
	for _, p := range probs {
		if within(field, p.Field) || within(p.Field, field) {
			return true
		}
	}
	return false
}

func isStructMapping(n *yaml.Node, t reflect.Type) bool {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct && t != durationType && t != byteSizeType
}

var (
	durationType = reflect.TypeOf(Duration(0))
	byteSizeType = reflect.TypeOf(ByteSize(0))
)

// checkNode walks a YAML node against the Go type it will decode into and
// records unknown fields and values of the wrong kind, so that one pass
// reports all of them with their paths.
// It reports whether the node is free of problems, and removes from
// mappings the fields that are not, so the rest can be decoded.
func checkNode(n *yaml.Node, t reflect.Type, path string, probs *[]Problem) bool {
	before := len(*probs)
	checkValue(n, t, path, probs)
	return len(*probs) == before
}

func checkValue(n *yaml.Node, t reflect.Type, path string, probs *[]Problem) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	add := func(msg string, args ...any) {
		*probs = append(*probs, Problem{Field: path, Message: fmt.Sprintf(msg, args...)})
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	// What the decoder itself refuses (a quoted number, NaN) is a problem
	// of this field, not an anonymous decoding error.
	decodes := func() bool {
		return n.Kind == yaml.ScalarNode && n.Decode(reflect.New(t).Interface()) == nil
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			add("must be a duration such as \"30s\"")
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			add("invalid duration %q (use a number with a unit, such as 500ms, 30s or 5m)", n.Value)
		}
		return
	case t == byteSizeType:
		if n.Kind != yaml.ScalarNode {
			add("must be a size such as 512Mi")
		} else if _, err := ParseByteSize(n.Value); err != nil {
			add("%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			add("must be a mapping of fields")
			return
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if name != "" && name != "-" {
				fields[name] = f
			}
		}
		seen := map[string]bool{}
		kept := n.Content[:0:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			if seen[k.Value] {
				*probs = append(*probs, Problem{Field: p, Message: "given twice"})
				continue
			}
			seen[k.Value] = true
			f, ok := fields[k.Value]
			if !ok {
				*probs = append(*probs, Problem{Field: p, Message: "unknown field (known: " + knownNames(fields) + ")"})
				continue
			}
			// A mapping for a struct keeps its good fields; anything
			// else with a problem is dropped whole.
			if checkNode(v, f.Type, p, probs) || isStructMapping(v, f.Type) {
				kept = append(kept, k, v)
			}
		}
		n.Content = kept
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			add("must be a list")
			return
		}
		for i, c := range n.Content {
			checkNode(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), probs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			add("must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkNode(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), probs)
		}
	case reflect.String:
		var s string
		switch {
		case n.Kind != yaml.ScalarNode || n.Decode(&s) != nil:
			add("must be a string")
		case !utf8.ValidString(s):
			add("must be UTF-8 text")
		}
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			add("must be true or false")
		}
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode {
			add("must be an integer")
		} else if _, err := strconv.ParseInt(n.Value, 0, 64); err != nil || !decodes() {
			add("must be an integer, got %q", n.Value)
		}
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode {
			add("must be a number")
		} else if _, err := strconv.ParseFloat(n.Value, 64); err != nil || !decodes() {
			add("must be a number, got %q", n.Value)
		}
	}
}

func knownNames(fields map[string]reflect.StructField) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func (m *Manifest) resolvePaths(baseDir string) {
	if baseDir == "" {
		return
	}
	if m.Runtime.Workdir != "" && !filepath.IsAbs(m.Runtime.Workdir) {
		m.Runtime.Workdir = filepath.Join(baseDir, m.Runtime.Workdir)
	}
	if m.Runtime.Workdir == "" && (len(m.Runtime.Command) > 0 || m.Runtime.Lambda != nil || m.Runtime.WSGI != "" || m.Runtime.ASGI != "") {
		m.Runtime.Workdir = baseDir
	}
	if m.Runtime.ONNX != "" && !filepath.IsAbs(m.Runtime.ONNX) {
		m.Runtime.ONNX = filepath.Join(baseDir, m.Runtime.ONNX)
	}
}

// Defaults. They live here and nowhere else.
const (
	DefaultMax                    = 4
	DefaultTargetConcurrency      = 1.0
	DefaultIdleTimeout            = 30 * time.Second
	DefaultMaxQueue               = 100
	DefaultStableWindow           = 60 * time.Second
	DefaultPanicWindow            = 6 * time.Second
	DefaultPanicThreshold         = 2.0
	DefaultStartupTimeout         = 60 * time.Second
	DefaultRequestTimeout         = 30 * time.Second
	DefaultGrace                  = 10 * time.Second
	DefaultBatchMaxDelay          = 2 * time.Millisecond
	DefaultBatchMaxBatchSize      = 32
	DefaultDedicatedMin           = 1
	DefaultServerlessMinimum      = 0
	DefaultTemplateKeep           = time.Hour
	defaultModeIfUnset       Mode = Serverless
)

// SetDefaults fills every unset field with its default.
func (m *Manifest) SetDefaults() {
	if m.Mode == "" {
		m.Mode = defaultModeIfUnset
	}
	if l := m.Runtime.Lambda; l != nil {
		if l.Event == "" {
			l.Event = EventAPIGWv1
		}
		// One event per instance at a time, as in Lambda: the autoscaler
		// then scales on events in flight.
		if m.Scaling.ContainerConcurrency == 0 {
			m.Scaling.ContainerConcurrency = 1
		}
	}
	if t := m.Runtime.Template; t != nil && t.Keep == 0 {
		t.Keep = Duration(DefaultTemplateKeep)
	}
	s := &m.Scaling
	if s.Min == nil {
		v := DefaultServerlessMinimum
		if m.Mode == Dedicated || m.Mode == Hybrid {
			v = DefaultDedicatedMin
		}
		s.Min = &v
	}
	if s.Max == 0 {
		s.Max = max(DefaultMax, *s.Min)
	}
	if s.TargetConcurrency == 0 {
		s.TargetConcurrency = DefaultTargetConcurrency
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if s.MaxQueue == 0 {
		s.MaxQueue = DefaultMaxQueue
	}
	if s.StableWindow == 0 {
		s.StableWindow = Duration(DefaultStableWindow)
	}
	if s.PanicWindow == 0 {
		s.PanicWindow = Duration(min(DefaultPanicWindow, s.StableWindow.D()))
	}
	if s.PanicThreshold == 0 {
		s.PanicThreshold = DefaultPanicThreshold
	}
	t := &m.Timeouts
	if t.Startup == 0 {
		t.Startup = Duration(DefaultStartupTimeout)
	}
	if t.Request == 0 {
		t.Request = Duration(DefaultRequestTimeout)
	}
	if t.Grace == 0 {
		t.Grace = Duration(DefaultGrace)
	}
	m.Cache.setDefaults()
	m.Async.setDefaults()
	m.Rollout.setDefaults()
	setPrewarmDefaults(m.Prewarm)
	if b := m.Batching; b != nil {
		if b.MaxBatchSize == 0 {
			b.MaxBatchSize = DefaultBatchMaxBatchSize
		}
		if b.MaxDelay == 0 {
			b.MaxDelay = Duration(DefaultBatchMaxDelay)
		}
	}
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// aliasRE is what an openai.models alias may be: a model name as OpenAI,
// Hugging Face and Ollama write them ("gpt-4o-mini",
// "meta-llama/Llama-3.1-8B-Instruct", "llama3.1:8b").
var aliasRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$`)

// Validate reports every problem of a manifest whose defaults are set.
func (m *Manifest) Validate() error {
	var probs []Problem
	bad := func(field, msg string, args ...any) {
		probs = append(probs, Problem{Field: field, Message: fmt.Sprintf(msg, args...)})
	}
	switch {
	case m.Name == "":
		bad("name", "required")
	case !nameRE.MatchString(m.Name):
		bad("name", "%q must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", m.Name)
	}
	switch m.Mode {
	case Serverless, Dedicated, Hybrid:
	default:
		bad("mode", "%q is not a mode (serverless | dedicated | hybrid)", m.Mode)
	}
	switch m.Backend {
	case "", BackendProcess, BackendDocker, BackendKubernetes:
	default:
		bad("backend", "%q is not a backend (process | docker | kubernetes)", m.Backend)
	}

	r := m.Runtime
	sources := 0
	for _, set := range []bool{len(r.Command) > 0 && r.Image == "", r.Image != "", r.ONNX != "", r.Lambda != nil, r.WSGI != "", r.ASGI != ""} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		bad("runtime.command", "required: give runtime.command (a program serving HTTP on $PORT), runtime.image, runtime.onnx, runtime.lambda, runtime.wsgi or runtime.asgi")
	case r.ONNX != "" && (len(r.Command) > 0 || r.Image != ""):
		bad("runtime.onnx", "cannot be combined with runtime.command or runtime.image")
	case sources > 1 && (r.Lambda != nil || r.WSGI != "" || r.ASGI != ""):
		bad("runtime", "give one of runtime.command, image, onnx, lambda, wsgi or asgi, not several")
	}
	validateFunction(m, bad)
	if len(r.Command) > 0 && r.Command[0] == "" {
		bad("runtime.command[0]", "must name a program")
	}
	if r.Health != "" && !strings.HasPrefix(r.Health, "/") {
		bad("runtime.health", "%q must be a path starting with /", r.Health)
	}
	if r.Port < 0 || r.Port > 65535 {
		bad("runtime.port", "%d is not a port (1-65535)", r.Port)
	}
	if r.Network != "" && r.Network != "host" {
		bad("runtime.network", "%q is not a network mode (host, or leave empty to publish on 127.0.0.1)", r.Network)
	}
	if r.Threads < 0 {
		bad("runtime.threads", "must not be negative")
	}
	if (m.Backend == BackendDocker || m.Backend == BackendKubernetes) && r.Image == "" && r.ONNX == "" {
		bad("runtime.image", "required with backend %s", m.Backend)
	}
	for k := range r.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			bad("runtime.env", "%q is not a valid variable name", k)
		}
	}

	s := m.Scaling
	lo := s.MinInstances()
	if lo < 0 {
		bad("scaling.min", "must not be negative")
	}
	if m.Mode == Dedicated && lo < 1 {
		bad("scaling.min", "dedicated deployments keep at least one instance: min must be >= 1 (use mode: serverless to scale to zero)")
	}
	if b := m.Burst; b != nil {
		switch {
		case m.Mode != Hybrid:
			bad("burst", "only a hybrid deployment has a burst tier (mode: hybrid)")
		case b.Backend != BackendProcess && b.Backend != BackendDocker:
			bad("burst.backend", "%q: the burst tier runs on process or docker", b.Backend)
		case b.Backend == m.Backend || (m.Backend == "" && b.Backend == BackendProcess):
			bad("burst.backend", "%q is the deployment's own backend: leave burst out", b.Backend)
		case m.Backend == BackendKubernetes:
			bad("burst", "a burst tier beside a kubernetes floor is not supported yet (replicas are not told apart by tier)")
		case b.Backend == BackendDocker && b.Image == "" && m.Runtime.Image == "" && m.Runtime.ONNX == "":
			bad("burst.image", "required: the burst tier runs on docker and runtime has no image")
		case b.Backend == BackendProcess && len(m.Runtime.Command) == 0 && m.Runtime.ONNX == "":
			bad("burst.backend", "the process backend needs runtime.command (or runtime.onnx) for the burst tier")
		}
		if b.Network != "" && b.Network != "host" {
			bad("burst.network", "%q is not a network mode (host, or leave empty)", b.Network)
		}
	}
	if m.Mode == Hybrid && lo < 1 {
		bad("scaling.min", "hybrid deployments keep a floor of scaling.min warm instances: min must be >= 1 (a floor of 0 is mode: serverless)")
	}
	if s.Max < 1 {
		bad("scaling.max", "must be at least 1")
	}
	if lo > s.Max {
		bad("scaling.min", "min (%d) is greater than max (%d)", lo, s.Max)
	}
	if s.TargetConcurrency <= 0 {
		bad("scaling.target_concurrency", "must be greater than 0")
	}
	if s.ContainerConcurrency < 0 {
		bad("scaling.container_concurrency", "must not be negative (0 means no limit)")
	}
	if s.MaxQueue < 0 {
		bad("scaling.max_queue", "must not be negative")
	}
	if s.IdleTimeout < 0 {
		bad("scaling.idle_timeout", "must not be negative")
	}
	if s.StableWindow <= 0 {
		bad("scaling.stable_window", "must be positive")
	}
	if s.PanicWindow <= 0 || s.PanicWindow > s.StableWindow {
		bad("scaling.panic_window", "must be positive and no longer than stable_window (%s)", s.StableWindow.D())
	}
	if s.PanicThreshold < 1 {
		bad("scaling.panic_threshold", "must be at least 1")
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{{"timeouts.startup", m.Timeouts.Startup}, {"timeouts.request", m.Timeouts.Request}, {"timeouts.grace", m.Timeouts.Grace}} {
		if d.v <= 0 {
			bad(d.field, "must be positive")
		}
	}
	if m.Resources.CPU < 0 {
		bad("resources.cpu", "must not be negative")
	}
	if m.Resources.Memory < 0 {
		bad("resources.memory", "must not be negative")
	}
	if m.Resources.GPUs < 0 {
		bad("resources.gpus", "must not be negative")
	}
	if b := m.Batching; b != nil {
		if b.MaxBatchSize < 1 {
			bad("batching.max_batch_size", "must be at least 1")
		}
		if b.MaxDelay <= 0 {
			bad("batching.max_delay", "must be positive")
		}
	}
	if o := m.OpenAI; o != nil {
		seen := map[string]bool{m.Name: true}
		for i, a := range o.Models {
			field := fmt.Sprintf("openai.models[%d]", i)
			switch {
			case !aliasRE.MatchString(a):
				bad(field, "%q is not a model name: 1-128 characters of A-Z, a-z, 0-9 and . _ : / -, starting with a letter or digit", a)
			case a == m.Name:
				bad(field, "%q is the deployment's own name, which OpenAI clients may send anyway", a)
			case seen[a]:
				bad(field, "%q is given twice", a)
			}
			seen[a] = true
		}
	}
	probs = append(probs, m.Cache.validate()...)
	probs = append(probs, m.Async.validate()...)
	probs = append(probs, m.Rollout.validate()...)
	validatePrewarm(m, bad)
	if m.Timeouts.Deadline < 0 {
		bad("timeouts.deadline", "must not be negative (0 means no deadline)")
	}
	switch {
	case m.Fallback == "":
	case !nameRE.MatchString(m.Fallback):
		bad("fallback", "%q is not a deployment name", m.Fallback)
	case m.Fallback == m.Name:
		bad("fallback", "%q is this deployment: name another deployment", m.Fallback)
	}
	if len(probs) > 0 {
		return &Error{Problems: probs}
	}
	return nil
}

// ByteSize is a memory size written as 512Mi, 1Gi, 100M or a plain number of bytes.
type ByteSize int64

var sizeUnits = map[string]int64{
	"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}

// ParseByteSize reads a size such as 512Mi.
func ParseByteSize(s string) (ByteSize, error) {
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') {
		i--
	}
	unit, ok := sizeUnits[s[i:]]
	num, err := strconv.ParseFloat(s[:i], 64)
	if !ok || err != nil || num < 0 {
		return 0, fmt.Errorf("invalid size %q (use a number with a unit: Ki, Mi, Gi, or K, M, G)", s)
	}
	return ByteSize(num * float64(unit)), nil
}

// String writes the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []string{"Ti", "Gi", "Mi", "Ki"} {
		if v := sizeUnits[u]; int64(b) >= v && int64(b)%v == 0 {
			return fmt.Sprintf("%d%s", int64(b)/v, u)
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalJSON writes the size as a string.
func (b ByteSize) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// UnmarshalJSON reads a size string or a number of bytes.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		var n int64
		if err := json.Unmarshal(data, &n); err != nil {
			return err
		}
		*b = ByteSize(n)
		return nil
	}
	v, err := ParseByteSize(s)
	*b = v
	return err
}

// UnmarshalText reads a size string (used by the YAML decoder).
func (b *ByteSize) UnmarshalText(data []byte) error {
	v, err := ParseByteSize(string(data))
	*b = v
	return err
}

// MarshalYAML writes the size as a string.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }
