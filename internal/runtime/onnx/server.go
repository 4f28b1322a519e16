// Package onnx is tandem's built-in model server: it serves one ONNX model
// file over the Open Inference Protocol v2 (REST) with ONNX Runtime, loaded
// at run time from a shared library (see FindLibrary). Backends start it
// like any instance program, as
//
//	tandem runtime onnx --model FILE --name NAME --threads N
//
// listening on 127.0.0.1:$PORT. Describe reads a model's metadata from the
// file without ONNX Runtime, for the controller at deploy time.
//
// Concurrency: one Model (an ONNX Runtime session, safe for concurrent
// runs) is shared by all requests; a semaphore bounds how many run at once
// (--max-concurrent, default the number of CPUs), so that a burst queues in
// Go instead of oversubscribing the CPUs with ONNX Runtime threads.
package onnx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	ort "github.com/yalue/onnxruntime_go"

	"tandem/internal/inference"
	"tandem/internal/problem"
)

// Config configures the model server.
type Config struct {
	// Model is the ONNX file.
	Model string
	// Name is the model's name in v2 paths; empty means the file's base name.
	Name string
	// Threads is ONNX Runtime's intra-op thread count per run; 0 means 1.
	Threads int
	// Listen is the address to listen on; empty means 127.0.0.1:$PORT
	// (PORT defaults to 8080).
	Listen string
	// MaxConcurrent bounds concurrent runs; 0 means the number of CPUs.
	MaxConcurrent int
	// MaxBodyBytes bounds a request body; 0 means 256 MiB (batches of many
	// requests arrive as one body).
	MaxBodyBytes int64
	// Logger defaults to a text logger on stderr.
	Logger *slog.Logger
}

// Command returns the `onnx` command for mounting under `tandem runtime`.
func Command() *cobra.Command {
	var cfg Config
	cmd := &cobra.Command{
		Use:   "onnx --model FILE [--name NAME] [--threads N]",
		Short: "Serve an ONNX model over the Open Inference Protocol v2 (the built-in runtime)",
		Long: `Serve one ONNX model file over the Open Inference Protocol v2 REST API with
ONNX Runtime, on 127.0.0.1:$PORT. Backends start it for deployments with
runtime.onnx; it can also be run by hand.

ONNX Runtime's shared library is taken from $` + EnvLibrary + `, else from
` + LibraryRelPath + ` (put there by scripts/fetch-onnxruntime.sh) under
the binary's folder, the working directory, or one of their parents.`,
		Example: `  PORT=9000 tandem runtime onnx --model iris.onnx --name iris
  curl -d @request.json localhost:9000/v2/models/iris/infer`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return Serve(ctx, cfg)
		},
		SilenceUsage: true,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Model, "model", "", "the ONNX model file (required)")
	f.StringVar(&cfg.Name, "name", "", "the model's name in /v2/models/NAME (default: the file's base name)")
	f.IntVar(&cfg.Threads, "threads", 1, "ONNX Runtime intra-op threads per inference")
	f.StringVar(&cfg.Listen, "listen", "", "address to listen on (default $HOST:$PORT, HOST defaulting to 127.0.0.1)")
	f.IntVar(&cfg.MaxConcurrent, "max-concurrent", 0, "inferences run at once (default: the number of CPUs)")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body", 256<<20, "largest request body in bytes")
	cmd.MarkFlagRequired("model")
	return cmd
}

// Main runs the onnx command with args (without the command's name), for a
// caller that does not use cobra.
func Main(args []string) error {
	cmd := Command()
	cmd.SilenceErrors = true
	cmd.SetArgs(args)
	return cmd.Execute()
}

// Serve loads the model, listens, and serves until ctx is done; then it
// stops accepting, lets requests in flight finish (up to 10s), and returns
// nil.
func Serve(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	log = log.With("component", "onnx-runtime")
	if cfg.Model == "" {
		return errors.New("no model: give --model FILE")
	}
	if cfg.Name == "" {
		cfg.Name = strings.TrimSuffix(baseName(cfg.Model), ".onnx")
	}
	addr := cfg.Listen
	if addr == "" {
		port := os.Getenv("PORT")
		if port == "" {
			port = "8080"
		}
		host := os.Getenv("HOST") // 0.0.0.0 inside a container with published ports
		if host == "" {
			host = "127.0.0.1"
		}
		addr = net.JoinHostPort(host, port)
	}
	start := time.Now()
	m, err := Load(cfg.Model, cfg.Threads)
	if err != nil {
		return err
	}
	defer m.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: NewHandler(m, cfg), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	log.Info("serving", "model", cfg.Name, "file", cfg.Model, "addr", ln.Addr().String(),
		"threads", max(cfg.Threads, 1), "onnxruntime", ort.GetVersion(), "library", libPath, "load", time.Since(start).Round(time.Microsecond))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// NewHandler returns the v2 REST handler for one loaded model, named
// cfg.Name. Every error it answers says source "model".
func NewHandler(m *Model, cfg Config) http.Handler {
	n := cfg.MaxConcurrent
	if n <= 0 {
		n = runtime.NumCPU()
	}
	maxBody := cfg.MaxBodyBytes
	if maxBody <= 0 {
		maxBody = 256 << 20
	}
	meta := m.Metadata().Clone()
	meta.Name = cfg.Name
	h := &handler{model: m, name: cfg.Name, meta: meta, sem: make(chan struct{}, n), maxBody: maxBody}
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }
	mux.HandleFunc("GET /health", ok)
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]bool{"live": true})
	})
	mux.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]bool{"ready": true})
	})
	server := map[string]any{"name": "tandem-onnxruntime", "version": ort.GetVersion(), "extensions": []string{}}
	mux.HandleFunc("GET /v2", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, server) })
	for _, prefix := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		mux.HandleFunc("GET "+prefix, h.metadata)
		mux.HandleFunc("GET "+prefix+"/ready", h.ready)
		mux.HandleFunc("POST "+prefix+"/infer", h.infer)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, problem.New(http.StatusNotFound, "not_found", "no endpoint at "+r.URL.Path))
	})
	return mux
}

type handler struct {
	model   *Model
	name    string
	meta    *inference.ModelMetadata
	sem     chan struct{}
	maxBody int64
}

func (h *handler) check(w http.ResponseWriter, r *http.Request) bool {
	name, version := r.PathValue("name"), r.PathValue("version")
	if name != h.name {
		writeError(w, problem.New(http.StatusNotFound, "model_not_found", fmt.Sprintf("this server serves model %q, not %q", h.name, name)))
		return false
	}
	if version != "" && version != inference.DefaultVersion {
		writeError(w, problem.New(http.StatusNotFound, "model_version_not_found", fmt.Sprintf("model %q has only version %s", h.name, inference.DefaultVersion)))
		return false
	}
	return true
}

func (h *handler) metadata(w http.ResponseWriter, r *http.Request) {
	if h.check(w, r) {
		writeJSON(w, h.meta)
	}
}

func (h *handler) ready(w http.ResponseWriter, r *http.Request) {
	if h.check(w, r) {
		writeJSON(w, map[string]any{"name": h.name, "ready": true})
	}
}

func (h *handler) infer(w http.ResponseWriter, r *http.Request) {
	if !h.check(w, r) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, problem.New(http.StatusRequestEntityTooLarge, inference.CodeBodyTooLarge, fmt.Sprintf("the request is larger than %d bytes", h.maxBody)))
			return
		}
		writeError(w, problem.New(http.StatusBadRequest, "read_error", err.Error()))
		return
	}
	var req *inference.InferRequest
	hl, err := inference.ParseBinaryLength(r.Header.Get(inference.HeaderBinaryLength))
	if err == nil {
		req, err = inference.DecodeInferRequestBinary(body, hl)
	}
	if err == nil {
		err = inference.Validate(req, h.meta)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	select {
	case h.sem <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	outs, err := h.model.Infer(req)
	<-h.sem
	if err != nil {
		if errors.Is(err, ErrInference) {
			err = problem.Wrap(err, http.StatusInternalServerError, "inference_failed")
		}
		writeError(w, err)
		return
	}
	resp := inference.InferResponse{ModelName: h.name, ModelVersion: inference.DefaultVersion, ID: req.ID, Outputs: outs}
	inference.WriteInferResponse(w, &resp, inference.BinaryOutputs(req))
}

// writeError answers err in tandem's error shape, marked as said by the
// model.
func writeError(w http.ResponseWriter, err error) {
	e := *problem.From(err)
	e.Source = problem.SourceModel
	problem.Write(w, &e)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
