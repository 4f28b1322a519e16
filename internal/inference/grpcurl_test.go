package inference_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"tandem/internal/inference"
	"tandem/internal/inference/pb"
)

// officialProto is open_inference_grpc.proto as published in
// kserve/open-inference-protocol (specification/protocol/, commit d49cc23).
const officialProto = "testdata/open_inference_grpc.proto"

// TestProto_isTheOfficialOne holds proto/grpc_predict_v2.proto, from which
// package pb is generated, to the official file: the same text but for its
// go_package option.
func TestProto_isTheOfficialOne(t *testing.T) {
	official, err := os.ReadFile(officialProto)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile(filepath.Join("..", "..", "proto", "grpc_predict_v2.proto"))
	if err != nil {
		t.Fatal(err)
	}
	option := []byte("\noption go_package = \"tandem/internal/inference/pb\";\n")
	if bytes.Count(ours, option) != 1 {
		t.Fatalf("proto/grpc_predict_v2.proto should have the line %q once", bytes.TrimSpace(option))
	}
	if got := bytes.Replace(ours, option, nil, 1); !bytes.Equal(got, official) {
		t.Errorf("proto/grpc_predict_v2.proto differs from %s in more than its go_package option", officialProto)
	}
	// And the generated code is of this file: a field that only the
	// official file has.
	if _, ok := any(&pb.ModelMetadataResponse{}).(interface{ GetProperties() map[string]string }); !ok {
		t.Error("package pb was not regenerated from the official proto (no ModelMetadataResponse.properties)")
	}
}

// grpcurl finds the grpcurl binary: $TANDEM_GRPCURL, then .cache/bin under
// the repository (scripts/setup.sh grpcurl puts it there), then $PATH.
func grpcurl(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TANDEM_GRPCURL"); p != "" {
		return p
	}
	if p, err := filepath.Abs(filepath.Join("..", "..", ".cache", "bin", "grpcurl")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	const msg = "grpcurl not found: run `bash scripts/setup.sh grpcurl` (installs it into .cache/bin) or set TANDEM_GRPCURL"
	if os.Getenv("CI") != "" {
		t.Fatal("CI: " + msg)
	}
	t.Skip("SKIPPED, NOT TESTED: " + msg)
	return ""
}

var grpcurlCode = regexp.MustCompile(`(?m)^\s*Code: (\w+)$`)

// callGRPCurl calls method with the request JSON through grpcurl, which
// knows the service only from the official proto file. It returns the
// answer's JSON, or the status code's name ("NotFound") and message.
func callGRPCurl(t *testing.T, bin, addr, method, request string) (answer []byte, code, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a bound against a hang, not a timing check
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-plaintext", "-emit-defaults", "-max-msg-sz", "67108864",
		"-import-path", filepath.Dir(officialProto), "-proto", filepath.Base(officialProto),
		"-d", "@", addr, "inference.GRPCInferenceService/"+method)
	cmd.Stdin = strings.NewReader(request)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("grpcurl: %v", err)
	}
	if m := grpcurlCode.FindSubmatch(stderr.Bytes()); m != nil {
		_, rest, _ := strings.Cut(stderr.String(), "Message: ")
		return nil, string(m[1]), strings.TrimSpace(rest)
	}
	if err != nil {
		t.Fatalf("grpcurl %s: %v\n%s", method, err, stderr.Bytes())
	}
	return stdout.Bytes(), "OK", ""
}

func fp32Bytes(vs ...float32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// TestGRPC_officialProto calls tandem's gRPC service with grpcurl, which
// reads the official open_inference_grpc.proto: every method answers in
// the official messages, and errors are the status codes that say what went
// wrong.
func TestGRPC_officialProto(t *testing.T) {
	bin := grpcurl(t)
	svc := inference.NewService(oipModels(), inference.Options{MaxBodyBytes: 16 << 10, ServerVersion: "9.9.9"})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := svc.GRPCServer()
	go srv.Serve(lis)
	defer srv.Stop()
	addr := lis.Addr().String()

	input := `{"name":"input","datatype":"FP32","shape":[1,4],"contents":{"fp32_contents":[0.25,0.25,0.25,0.25]}}`
	infer := func(model string) string { return `{"model_name":"` + model + `","id":"g1","inputs":[` + input + `]}` }
	big := make([]string, 6000)
	for i := range big {
		big[i] = "0.125"
	}
	raw := base64.StdEncoding.EncodeToString(fp32Bytes(1, 2, 3, 4))

	type ok struct {
		answer proto.Message // decoded into, then checked
		check  func(t *testing.T, m proto.Message)
	}
	cases := []struct {
		name, method, request string
		want                  *ok
		code, msg             string // for errors: the status code's name, and part of the message
	}{
		{"ServerLive", "ServerLive", `{}`, &ok{&pb.ServerLiveResponse{}, func(t *testing.T, m proto.Message) {
			if !m.(*pb.ServerLiveResponse).Live {
				t.Error("not live")
			}
		}}, "", ""},
		{"ServerReady", "ServerReady", `{}`, &ok{&pb.ServerReadyResponse{}, func(t *testing.T, m proto.Message) {
			if !m.(*pb.ServerReadyResponse).Ready {
				t.Error("not ready")
			}
		}}, "", ""},
		{"ServerMetadata", "ServerMetadata", `{}`, &ok{&pb.ServerMetadataResponse{}, func(t *testing.T, m proto.Message) {
			md := m.(*pb.ServerMetadataResponse)
			if md.Name != "tandem" || md.Version != "9.9.9" || !slices.Equal(md.Extensions, []string{"binary_tensor_data"}) {
				t.Errorf("%v", md)
			}
		}}, "", ""},
		{"ModelMetadata", "ModelMetadata", `{"name":"digits"}`, &ok{&pb.ModelMetadataResponse{}, func(t *testing.T, m proto.Message) {
			md := m.(*pb.ModelMetadataResponse)
			if md.Name != "digits" || !slices.Equal(md.Versions, []string{"1"}) || md.Platform != "onnxruntime_onnx" ||
				len(md.Inputs) != 1 || md.Inputs[0].Datatype != "FP32" || !slices.Equal(md.Inputs[0].Shape, []int64{-1, 4}) || len(md.Outputs) != 2 {
				t.Errorf("%v", md)
			}
		}}, "", ""},
		{"ModelMetadata, version", "ModelMetadata", `{"name":"digits","version":"1"}`, &ok{&pb.ModelMetadataResponse{}, nil}, "", ""},
		{"ModelMetadata, pass-through", "ModelMetadata", `{"name":"custom"}`, &ok{&pb.ModelMetadataResponse{}, func(t *testing.T, m proto.Message) {
			if md := m.(*pb.ModelMetadataResponse); md.Platform != "python" || len(md.Inputs) != 1 {
				t.Errorf("%v", md)
			}
		}}, "", ""},
		{"ModelReady, scaled to zero", "ModelReady", `{"name":"digits"}`, &ok{&pb.ModelReadyResponse{}, func(t *testing.T, m proto.Message) {
			if m.(*pb.ModelReadyResponse).Ready {
				t.Error("ready while scaled to zero")
			}
		}}, "", ""},
		{"ModelReady, warm", "ModelReady", `{"name":"warm","version":"1"}`, &ok{&pb.ModelReadyResponse{}, func(t *testing.T, m proto.Message) {
			if !m.(*pb.ModelReadyResponse).Ready {
				t.Error("not ready")
			}
		}}, "", ""},
		{"ModelInfer", "ModelInfer", infer("digits"), &ok{&pb.ModelInferResponse{}, func(t *testing.T, m proto.Message) {
			r := m.(*pb.ModelInferResponse)
			if r.ModelName != "digits" || r.Id != "g1" || len(r.Outputs) != 2 || r.Outputs[0].Name != "label" ||
				!slices.Equal(r.Outputs[0].GetContents().GetInt64Contents(), []int64{2}) {
				t.Errorf("%v", r)
			}
		}}, "", ""},
		{"ModelInfer, raw contents", "ModelInfer",
			`{"model_name":"digits","model_version":"1","inputs":[{"name":"input","datatype":"FP32","shape":[1,4]}],"outputs":[{"name":"label"}],"raw_input_contents":["` + raw + `"]}`,
			&ok{&pb.ModelInferResponse{}, func(t *testing.T, m proto.Message) {
				r := m.(*pb.ModelInferResponse)
				if len(r.Outputs) != 1 || len(r.RawOutputContents) != 1 || binary.LittleEndian.Uint64(r.RawOutputContents[0]) != 2 {
					t.Errorf("%v", r)
				}
			}}, "", ""},
		{"ModelInfer, pass-through", "ModelInfer", `{"model_name":"custom","inputs":[{"name":"x","datatype":"FP32","shape":[1],"contents":{"fp32_contents":[1]}}]}`,
			&ok{&pb.ModelInferResponse{}, func(t *testing.T, m proto.Message) {
				if r := m.(*pb.ModelInferResponse); r.ModelName != "custom" || !slices.Equal(r.Outputs[0].GetContents().GetFp32Contents(), []float32{0.5}) {
					t.Errorf("%v", r)
				}
			}}, "", ""},

		{"ModelMetadata, unknown model", "ModelMetadata", `{"name":"nope"}`, nil, "NotFound", `no model "nope" is deployed (model_not_found, from gateway)`},
		{"ModelReady, unknown model", "ModelReady", `{"name":"nope"}`, nil, "NotFound", "model_not_found"},
		{"ModelInfer, unknown model", "ModelInfer", infer("nope"), nil, "NotFound", "model_not_found"},
		{"ModelMetadata, unknown version", "ModelMetadata", `{"name":"digits","version":"2"}`, nil, "NotFound", "model_version_not_found"},
		{"ModelInfer, unknown version", "ModelInfer", `{"model_name":"digits","model_version":"2","inputs":[` + input + `]}`, nil, "NotFound", "model_version_not_found"},
		{"ModelInfer, wrong shape", "ModelInfer", strings.Replace(infer("digits"), `[1,4]`, `[2,2]`, 1), nil, "InvalidArgument", "inputs[0].shape"},
		{"ModelInfer, wrong contents", "ModelInfer", strings.Replace(infer("digits"), `fp32_contents`, `fp64_contents`, 1), nil, "InvalidArgument", "fp32_contents"},
		{"ModelInfer, too large", "ModelInfer", `{"model_name":"digits","inputs":[{"name":"input","datatype":"FP32","shape":[1500,4],"contents":{"fp32_contents":[` + strings.Join(big, ",") + `]}}]}`,
			nil, "ResourceExhausted", ""},
		{"ModelInfer, queue full", "ModelInfer", infer("full"), nil, "Unavailable", "queue_full"},
		{"ModelInfer, start timeout", "ModelInfer", infer("slow"), nil, "DeadlineExceeded", "start_timeout"},
		{"ModelInfer, deadline", "ModelInfer", infer("late"), nil, "DeadlineExceeded", ""},
		{"ModelInfer, instance answers garbage", "ModelInfer", infer("broken"), nil, "Unavailable", "upstream_error"},
		{"ModelInfer, instance's own error", "ModelInfer", infer("oom"), nil, "Internal", "out of memory (model_error, from model)"},
		{"ModelInfer, instance unreachable", "ModelInfer", infer("crash"), nil, "Internal", "connection reset by peer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			answer, code, msg := callGRPCurl(t, bin, addr, c.method, c.request)
			if c.want == nil {
				if code != c.code || !strings.Contains(msg, c.msg) {
					t.Errorf("got %s %q, want %s containing %q", code, msg, c.code, c.msg)
				}
				return
			}
			if code != "OK" {
				t.Fatalf("%s: %s", code, msg)
			}
			if err := protojson.Unmarshal(answer, c.want.answer); err != nil {
				t.Fatalf("grpcurl's answer is not a %T: %v\n%s", c.want.answer, err, answer)
			}
			if c.want.check != nil {
				c.want.check(t, c.want.answer)
			}
		})
	}
}
