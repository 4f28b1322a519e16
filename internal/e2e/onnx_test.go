package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"tandem/internal/controller"
	"tandem/internal/inference/pb"
	"tandem/internal/runtime/onnx"
	"tandem/internal/testbin"
)

type rows struct {
	Labels []int64     `json:"labels"`
	Rows   [][]float32 `json:"rows"`
}

func loadRows(t *testing.T, file string) rows {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testbin.RepoRoot(t), "models", file))
	if err != nil {
		t.Fatal(err)
	}
	var r rows
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// onnxServer starts tandem with the ONNX Runtime library found (CI must
// have it: scripts/setup.sh fetches it).
func onnxServer(t *testing.T) *server {
	t.Helper()
	lib, err := onnx.FindLibrary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: %v", err)
		}
		t.Skipf("SKIPPED, NOT TESTED: %v", err)
	}
	s := &server{t: t, bin: testbin.Build(t, "tandem/cmd/tandem"), dataDir: t.TempDir(),
		extraEnv: []string{"TANDEM_ONNXRUNTIME_LIB=" + lib}}
	s.start()
	t.Cleanup(func() { s.stop(15) })
	return s
}

func inferBody(name string, r [][]float32) string {
	flat := []float32{}
	for _, row := range r {
		flat = append(flat, row...)
	}
	b, _ := json.Marshal(map[string]any{"id": "req-7", "inputs": []map[string]any{{
		"name": name, "datatype": "FP32", "shape": []int{len(r), len(r[0])}, "data": flat}}})
	return string(b)
}

// The digits and iris models, deployed from their model files serverless,
// answer v2 REST and gRPC with sklearn's labels; metadata, health and bad
// requests never wake them.
func TestONNX_V2FromZero(t *testing.T) {
	s := onnxServer(t)
	root := testbin.RepoRoot(t)
	for _, m := range []struct{ manifest, name, rows string }{
		{"examples/digits-onnx/serverless.yaml", "digits", "digits_rows.json"},
		{"examples/iris-onnx/serverless.yaml", "iris-onnx", "iris_rows.json"},
	} {
		t.Run(m.name, func(t *testing.T) {
			if out, err := s.tandem("deploy", "-f", filepath.Join(root, m.manifest)); err != nil {
				t.Fatalf("deploy: %v\n%s", err, out)
			}
			td := loadRows(t, m.rows)
			cold := func() {
				t.Helper()
				if st := s.status(m.name); len(st.Instances) != 0 {
					t.Fatalf("an instance was started: %+v", st.Instances)
				}
			}
			// Health and metadata answer from what tandem cached: no wake-up.
			for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/" + m.name, "/v2/models/" + m.name + "/versions/1"} {
				if r := s.call("GET", path, ""); r.code != 200 {
					t.Fatalf("GET %s: %v", path, r)
				}
			}
			r := s.call("GET", "/v2/models/"+m.name, "")
			if !strings.Contains(r.body, `"inputs":[{"name":"input","datatype":"FP32"`) {
				t.Fatalf("model metadata: %s", r.body)
			}
			// Not ready is an answer, not an error: 200 {"name", "ready": false}.
			if r := s.call("GET", "/v2/models/"+m.name+"/ready", ""); r.code != 200 || strings.TrimSpace(r.body) != `{"name":"`+m.name+`","ready":false}` {
				t.Fatalf("model ready while scaled to zero: %v", r)
			}
			if r := s.call("GET", "/v2", ""); !strings.Contains(r.body, `"extensions":["binary_tensor_data"]`) {
				t.Errorf("server metadata: %v", r)
			}
			cold()
			// Bad requests are refused at the front door, naming the problem.
			width := len(td.Rows[0])
			bad := []struct{ what, body, want string }{
				{"input name", strings.Replace(inferBody("input", td.Rows[:1]), `"name":"input"`, `"name":"pixels"`, 1), "pixels"},
				{"datatype", strings.Replace(inferBody("input", td.Rows[:1]), `"FP32"`, `"FP64"`, 1), "datatype"},
				{"shape", strings.Replace(inferBody("input", td.Rows[:1]), fmt.Sprintf("[1,%d]", width), fmt.Sprintf("[1,%d]", width+1), 1), "shape"},
				{"element count", strings.Replace(inferBody("input", td.Rows[:1]), fmt.Sprintf("[1,%d]", width), fmt.Sprintf("[2,%d]", width), 1), "element"},
				{"malformed JSON", `{"inputs": [`, "JSON"},
				{"empty body", "", "empty"},
			}
			for _, b := range bad {
				r := s.call("POST", "/v2/models/"+m.name+"/infer", b.body)
				if r.code != 400 || !strings.Contains(strings.ToLower(r.body), strings.ToLower(b.want)) {
					t.Errorf("%s: %v, want 400 naming %q", b.what, r, b.want)
				}
				// The protocol's error object: one string.
				var e map[string]any
				err := json.Unmarshal([]byte(r.body), &e)
				if msg, ok := e["error"].(string); err != nil || len(e) != 1 || !ok || msg == "" {
					t.Errorf("%s: %s is not {\"error\": \"message\"}", b.what, r.body)
				}
			}
			big := `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[` + strings.Repeat("1,", 5<<20) + `1]}]}`
			if r := s.call("POST", "/v2/models/"+m.name+"/infer", big); r.code != 413 {
				t.Errorf("oversized body: %d, want 413", r.code)
			}
			cold()

			// REST from zero.
			r = s.call("POST", "/v2/models/"+m.name+"/infer", inferBody("input", td.Rows))
			if r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "true" {
				t.Fatalf("infer from zero: %v", r)
			}
			var resp struct {
				ID      string `json:"id"`
				Outputs []struct {
					Name string          `json:"name"`
					Data json.RawMessage `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal([]byte(r.body), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.ID != "req-7" {
				t.Errorf("id %q not echoed", resp.ID)
			}
			var labels []int64
			for _, o := range resp.Outputs {
				if o.Name == "label" {
					json.Unmarshal(o.Data, &labels)
				}
			}
			if !reflect.DeepEqual(labels, td.Labels) {
				t.Fatalf("REST labels %v, sklearn says %v", labels, td.Labels)
			}

			// gRPC, on its own listener.
			conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cl := pb.NewGRPCInferenceServiceClient(conn)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if live, err := cl.ServerLive(ctx, &pb.ServerLiveRequest{}); err != nil || !live.Live {
				t.Fatalf("ServerLive: %v %v", live, err)
			}
			md, err := cl.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: m.name})
			if err != nil || len(md.Inputs) != 1 || md.Inputs[0].Datatype != "FP32" {
				t.Fatalf("ModelMetadata: %v %v", md, err)
			}
			var flat []float32
			for _, row := range td.Rows {
				flat = append(flat, row...)
			}
			out, err := cl.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: m.name, Id: "g1",
				Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32",
					Shape: []int64{int64(len(td.Rows)), int64(width)}, Contents: &pb.InferTensorContents{Fp32Contents: flat}}}})
			if err != nil {
				t.Fatalf("ModelInfer: %v", err)
			}
			if got := grpcLabels(t, out); !reflect.DeepEqual(got, td.Labels) {
				t.Fatalf("gRPC labels %v, sklearn says %v", got, td.Labels)
			}
			s.waitFor("ready", 10*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, m.name)
			if r := s.call("GET", "/v2/models/"+m.name+"/ready", ""); r.code != 200 || strings.TrimSpace(r.body) != `{"name":"`+m.name+`","ready":true}` {
				t.Fatalf("model ready once warm: %v", r)
			}
		})
	}
}

func grpcLabels(t *testing.T, out *pb.ModelInferResponse) []int64 {
	t.Helper()
	for i, o := range out.Outputs {
		if o.Name != "label" {
			continue
		}
		if o.Contents != nil && len(o.Contents.Int64Contents) > 0 {
			return o.Contents.Int64Contents
		}
		if i < len(out.RawOutputContents) {
			raw := out.RawOutputContents[i]
			v := make([]int64, len(raw)/8)
			binary.Read(bytes.NewReader(raw), binary.LittleEndian, v)
			return v
		}
	}
	t.Fatalf("no label output in %v", out)
	return nil
}
