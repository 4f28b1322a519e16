package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"tandem/internal/manifest"
	"tandem/internal/problem"
	"tandem/internal/tracing"
)

// HeaderColdStart is set on every infer response: true when the request
// waited for an instance to start.
const HeaderColdStart = "X-Tandem-Cold-Start"

// DefaultMaxBodyBytes bounds a request body when Options.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 8 << 20

// Platform is the v2 platform name of models served by tandem's built-in
// ONNX runtime (Triton's name for the same thing).
const Platform = "onnxruntime_onnx"

// DefaultVersion is the one version of every model tandem serves.
const DefaultVersion = "1"

// Models resolves a model name to what the v2 endpoints need. The gateway
// implements it over its routing snapshot; calls must be cheap and safe for
// concurrent use, and never wake anything.
type Models interface {
	// Model returns the model called name, and false if there is none.
	Model(name string) (Model, bool)
	// Names lists the deployed models.
	Names() []string
}

// Model is one deployment as the v2 endpoints see it.
type Model struct {
	Name string
	// Ready reports whether an instance is ready now. It never wakes anything.
	Ready func() bool
	// Metadata was cached at deploy time; nil for deployments that are not
	// served by the built-in runtime. With nil Metadata, requests are not
	// validated or batched, and metadata requests are passed to an instance.
	Metadata *ModelMetadata
	// Batching turns on dynamic batching; nil means off.
	Batching *manifest.Batching
	Upstream Upstream
}

// Upstream sends a request to a ready instance of the model, waking it from
// zero if need be (the activator). The request's URL carries only the path
// and query; Upstream fills in the instance's address. coldStart is true
// when the call waited for an instance to start. Errors are *problem.Error
// or sentinels registered with package problem. The caller closes
// resp.Body. Do is called concurrently.
type Upstream interface {
	Do(ctx context.Context, req *http.Request) (resp *http.Response, coldStart bool, err error)
}

// Options tune a Service.
type Options struct {
	// Registerer receives the batching metrics; nil means none are kept.
	Registerer prometheus.Registerer
	// MaxBodyBytes bounds a request body (and a gRPC message); 0 means
	// DefaultMaxBodyBytes. Larger requests get 413 (gRPC: ResourceExhausted).
	MaxBodyBytes int64
	// ServerName and ServerVersion answer the server metadata endpoint;
	// they default to "tandem" and "dev".
	ServerName, ServerVersion string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Front is the gateway's request pipeline that model-scoped requests
	// run in; nil admits everything and meters nothing.
	Front Front
}

// Service answers the Open Inference Protocol v2 for a set of models, over
// REST (Handler) and gRPC (GRPCServer). Both share its batchers, so REST
// and gRPC requests for one model are batched together. It is safe for
// concurrent use.
type Service struct {
	models   Models
	opts     Options
	log      *slog.Logger
	metrics  *metrics
	mu       sync.Mutex
	batchers map[string]*modelBatcher
}

// NewService returns a Service over models.
func NewService(models Models, opts Options) *Service {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.ServerName == "" {
		opts.ServerName = "tandem"
	}
	if opts.ServerVersion == "" {
		opts.ServerVersion = "dev"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Front == nil {
		opts.Front = noFront{}
	}
	return &Service{
		models:   models,
		opts:     opts,
		log:      opts.Logger.With("component", "inference"),
		metrics:  newMetrics(opts.Registerer),
		batchers: map[string]*modelBatcher{},
	}
}

// NewHandler returns the REST handler for the gateway's /v2 routes (mount it
// on both "/v2" and "/v2/"). To share batchers with a gRPC server, make one
// Service and use its Handler and GRPCServer instead.
func NewHandler(models Models, opts Options) http.Handler {
	return NewService(models, opts).Handler()
}

// NewGRPCServer returns a gRPC server with GRPCInferenceService registered.
func NewGRPCServer(models Models, opts Options) *grpc.Server {
	return NewService(models, opts).GRPCServer()
}

// serverMetadata is the v2 server metadata response.
type serverMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// extensions lists the protocol extensions tandem supports, as the server
// metadata endpoint answers them: Triton's binary tensor data extension
// (REST; gRPC has raw_input_contents and raw_output_contents built in).
var extensions = []string{ExtensionBinaryTensorData}

// ExtensionBinaryTensorData is the binary tensor data extension's name in
// server metadata (Triton's name for it).
const ExtensionBinaryTensorData = "binary_tensor_data"

func (s *Service) serverMetadata() serverMetadata {
	return serverMetadata{Name: s.opts.ServerName, Version: s.opts.ServerVersion, Extensions: slices.Clone(extensions)}
}

// lookup finds a model and checks the version, if one is given.
func (s *Service) lookup(name, version string) (Model, error) {
	m, ok := s.models.Model(name)
	if !ok {
		return m, problem.New(http.StatusNotFound, "model_not_found", fmt.Sprintf("no model %q is deployed", name))
	}
	if version != "" && m.Metadata != nil && !slices.Contains(versions(m.Metadata), version) {
		return m, problem.New(http.StatusNotFound, "model_version_not_found",
			fmt.Sprintf("model %q has no version %q (versions: %s)", name, version, strings.Join(versions(m.Metadata), ", ")))
	}
	return m, nil
}

func versions(md *ModelMetadata) []string {
	if len(md.Versions) > 0 {
		return md.Versions
	}
	return []string{DefaultVersion}
}

// metadataOf returns a model's metadata as answered: named after the
// deployment, with its versions.
func metadataOf(m Model) *ModelMetadata {
	md := m.Metadata.Clone()
	md.Name = m.Name
	md.Versions = versions(m.Metadata)
	if md.Platform == "" {
		md.Platform = Platform
	}
	return md
}

// prepare decodes and validates a request body for m; binaryLen is the
// Inference-Header-Content-Length, -1 for plain JSON.
func prepare(m Model, body []byte, binaryLen int) (*InferRequest, error) {
	req, err := DecodeInferRequestBinary(body, binaryLen)
	if err != nil {
		return nil, err
	}
	if err := Validate(req, m.Metadata); err != nil {
		return nil, err
	}
	return req, nil
}

// infer runs a decoded, validated request through the batcher when it can
// be batched, else alone.
func (s *Service) infer(ctx context.Context, m Model, req *InferRequest) (*InferResponse, bool, error) {
	if mb := s.batcherFor(m); mb != nil {
		key, rows, why := batchKey(m, req)
		if rk, ok := ExchangeFrom(ctx).(RouteKeyer); ok {
			// Requests routed to different revisions never share a batch:
			// the batch goes where its first request was routed.
			key += "\x00" + rk.RouteKey()
		}
		switch {
		case why != "":
			s.metrics.alone(m.Name, why)
		case rows > int64(mb.cfg.MaxBatchSize):
			s.metrics.alone(m.Name, "too_many_rows")
		default:
			_, wait := tracing.FromContext(ctx).Start(ctx, tracing.SpanBatchWait)
			r, err := mb.b.Do(ctx, key, int(rows), &batchItem{model: m, req: req, rows: rows, wait: wait})
			wait.End(err)
			if err != nil {
				return nil, false, err
			}
			return r.resp, r.cold, r.err
		}
	}
	return s.call(ctx, m, req)
}

// call sends one request to an instance and decodes the answer. To the
// built-in runtime (a model with Metadata), tensors travel in the binary
// data extension, so neither side writes or parses JSON numbers; other v2
// servers get plain JSON.
func (s *Service) call(ctx context.Context, m Model, req *InferRequest) (*InferResponse, bool, error) {
	binary := m.Metadata != nil
	size := 512
	for i := range req.Inputs {
		size += len(req.Inputs[i].Raw) + 128
	}
	var body []byte
	n := -1
	if binary {
		body, n = req.AppendBinary(make([]byte, 0, size), true)
	} else {
		body = req.AppendJSON(make([]byte, 0, size*3))
	}
	hreq, err := s.newRequest(ctx, m, http.MethodPost, inferPath(m.Name), body)
	if err != nil {
		return nil, false, err
	}
	if binary {
		hreq.Header.Set("Content-Type", "application/octet-stream")
		hreq.Header.Set(HeaderBinaryLength, strconv.Itoa(n))
	} else {
		hreq.Header.Set("Content-Type", "application/json")
	}
	resp, cold, err := m.Upstream.Do(ctx, hreq)
	if err != nil {
		return nil, cold, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, cold, problem.New(http.StatusBadGateway, "upstream_error",
			fmt.Sprintf("model %q: reading the instance's answer: %v", m.Name, err))
	}
	if resp.StatusCode/100 != 2 {
		return nil, cold, modelError(resp.StatusCode, data)
	}
	hl, err := ParseBinaryLength(resp.Header.Get(HeaderBinaryLength))
	var out *InferResponse
	if err == nil {
		out, err = DecodeInferResponseBinary(data, hl)
	}
	if err != nil {
		return nil, cold, problem.New(http.StatusBadGateway, "upstream_error",
			fmt.Sprintf("model %q: the instance's answer is not a v2 inference response: %v", m.Name, err))
	}
	return out, cold, nil
}

func inferPath(name string) string { return "/v2/models/" + url.PathEscape(name) + "/infer" }

// send makes a request (JSON body, if any) to m's Upstream.
func (s *Service) send(ctx context.Context, m Model, method, path string, body []byte) (*http.Response, bool, error) {
	req, err := s.newRequest(ctx, m, method, path, body)
	if err != nil {
		return nil, false, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return m.Upstream.Do(ctx, req)
}

func (s *Service) newRequest(ctx context.Context, m Model, method, path string, body []byte) (*http.Request, error) {
	if m.Upstream == nil {
		return nil, problem.New(http.StatusServiceUnavailable, "no_upstream", fmt.Sprintf("model %q has no instances to send to", m.Name))
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	return http.NewRequestWithContext(ctx, method, path, rd)
}

// modelError turns an instance's error answer into a *problem.Error that
// says the model said it. It reads tandem's shape ({"error": {...}}) and
// the v2 protocol's ({"error": "message"}).
func modelError(status int, body []byte) *problem.Error {
	var shaped struct {
		Error json.RawMessage `json:"error"`
	}
	e := &problem.Error{Status: status, Code: "model_error", Source: problem.SourceModel}
	if json.Unmarshal(body, &shaped) == nil && len(shaped.Error) > 0 {
		var pe problem.Error
		var msg string
		switch {
		case json.Unmarshal(shaped.Error, &pe) == nil && pe.Message != "":
			e.Code, e.Message, e.Field, e.Details = pe.Code, pe.Message, pe.Field, pe.Details
			if e.Code == "" {
				e.Code = "model_error"
			}
			return e
		case json.Unmarshal(shaped.Error, &msg) == nil:
			e.Message = msg
			return e
		}
	}
	e.Message = strings.TrimSpace(string(body))
	if len(e.Message) > 1024 {
		e.Message = e.Message[:1024] + "..."
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// errBodyTooLarge builds the 413 for a body over the limit.
func (s *Service) errBodyTooLarge(n int64) *problem.Error {
	return problem.New(http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
		fmt.Sprintf("the request is larger than the limit of %d bytes", n))
}
