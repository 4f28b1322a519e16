package inference

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"tandem/internal/inference/pb"
	"tandem/internal/problem"
)

// GRPCHeaderColdStart is the gRPC response header that says whether a
// ModelInfer call waited for an instance to start.
const GRPCHeaderColdStart = "x-tandem-cold-start"

// GRPCServer returns a gRPC server with GRPCInferenceService registered,
// answering from the same models, validation, batching and Upstream as
// Handler. The caller runs it with Serve on its own listener.
func (s *Service) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	max := int(min(s.opts.MaxBodyBytes, math.MaxInt32))
	opts = append([]grpc.ServerOption{grpc.MaxRecvMsgSize(max), grpc.ChainUnaryInterceptor(s.grpcPipeline)}, opts...)
	srv := grpc.NewServer(opts...)
	pb.RegisterGRPCInferenceServiceServer(srv, &grpcService{s: s})
	return srv
}

type grpcService struct {
	pb.UnimplementedGRPCInferenceServiceServer
	s *Service
}

var _ pb.GRPCInferenceServiceServer = (*grpcService)(nil)

func (g *grpcService) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (g *grpcService) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: true}, nil
}

func (g *grpcService) ModelReady(_ context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	m, err := g.s.lookup(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.ModelReadyResponse{Ready: m.Ready != nil && m.Ready()}, nil
}

func (g *grpcService) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	md := g.s.serverMetadata()
	return &pb.ServerMetadataResponse{Name: md.Name, Version: md.Version, Extensions: md.Extensions}, nil
}

func (g *grpcService) ModelMetadata(ctx context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, err := g.s.lookup(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, grpcError(err)
	}
	var md *ModelMetadata
	if m.Metadata != nil {
		md = metadataOf(m)
	} else if md, err = g.s.fetchMetadata(ctx, m); err != nil {
		return nil, grpcError(err)
	}
	out := &pb.ModelMetadataResponse{Name: md.Name, Versions: md.Versions, Platform: md.Platform}
	for _, t := range md.Inputs {
		out.Inputs = append(out.Inputs, &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape})
	}
	for _, t := range md.Outputs {
		out.Outputs = append(out.Outputs, &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape})
	}
	return out, nil
}

// fetchMetadata asks an instance of a model without cached metadata.
func (s *Service) fetchMetadata(ctx context.Context, m Model) (*ModelMetadata, error) {
	resp, _, err := s.send(ctx, m, http.MethodGet, "/v2/models/"+m.Name, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, problem.New(http.StatusBadGateway, "upstream_error", err.Error())
	}
	if resp.StatusCode != http.StatusOK {
		return nil, modelError(resp.StatusCode, body)
	}
	var md ModelMetadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, problem.New(http.StatusBadGateway, "upstream_error",
			fmt.Sprintf("model %q: the instance's metadata is not v2 model metadata: %v", m.Name, err))
	}
	return &md, nil
}

func (g *grpcService) ModelInfer(ctx context.Context, in *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	m, err := g.s.lookup(in.GetModelName(), in.GetModelVersion())
	if err != nil {
		return nil, grpcError(err)
	}
	req, err := FromProto(in)
	if err != nil {
		return nil, grpcError(err)
	}
	if m.Metadata != nil {
		if err := Validate(req, m.Metadata); err != nil {
			return nil, grpcError(err)
		}
	}
	var resp *InferResponse
	var cold bool
	if m.Metadata != nil {
		resp, cold, err = g.s.infer(ctx, m, req)
	} else {
		resp, cold, err = g.s.call(ctx, m, req)
	}
	grpc.SetHeader(ctx, metadata.Pairs(GRPCHeaderColdStart, strconv.FormatBool(cold)))
	setCold(ctx, cold)
	if err != nil {
		return nil, grpcError(err)
	}
	return ToProto(resp, len(in.GetRawInputContents()) > 0), nil
}

// grpcErr is a gRPC status that still unwraps to the error it was made
// from, so the pipeline meters the cause.
type grpcErr struct {
	st    *status.Status
	cause error
}

func (e *grpcErr) Error() string              { return e.st.Err().Error() }
func (e *grpcErr) GRPCStatus() *status.Status { return e.st }
func (e *grpcErr) Unwrap() error              { return e.cause }

// grpcError maps an error to a gRPC status, through the same HTTP status
// that the REST endpoints would answer.
func grpcError(err error) error {
	if errors.Is(err, context.Canceled) {
		return &grpcErr{status.New(codes.Canceled, err.Error()), err}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &grpcErr{status.New(codes.DeadlineExceeded, err.Error()), err}
	}
	e := problem.From(err)
	var c codes.Code
	switch e.Status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		c = codes.InvalidArgument
	case http.StatusUnauthorized:
		c = codes.Unauthenticated
	case http.StatusForbidden:
		c = codes.PermissionDenied
	case http.StatusNotFound:
		c = codes.NotFound
	case http.StatusRequestEntityTooLarge:
		c = codes.ResourceExhausted
	case http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusBadGateway:
		c = codes.Unavailable
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		c = codes.DeadlineExceeded
	case 499:
		c = codes.Canceled
	case http.StatusNotImplemented:
		c = codes.Unimplemented
	default:
		c = codes.Internal
	}
	return &grpcErr{status.New(c, errorMessage(e)), err}
}

func invalid(field, msg string) error {
	return problem.New(http.StatusBadRequest, CodeInvalidInput, msg).WithField(field)
}

// FromProto converts a gRPC inference request, with its data in typed
// contents or in raw_input_contents. Errors are *problem.Error (400).
func FromProto(in *pb.ModelInferRequest) (*InferRequest, error) {
	req := &InferRequest{ID: in.GetId(), Parameters: fromParams(in.GetParameters())}
	raw := in.GetRawInputContents()
	if len(raw) > 0 && len(raw) != len(in.GetInputs()) {
		return nil, invalid("raw_input_contents", fmt.Sprintf("has %d entries for %d inputs", len(raw), len(in.GetInputs())))
	}
	for i, t := range in.GetInputs() {
		f := fmt.Sprintf("inputs[%d]", i)
		dt := Datatype(t.GetDatatype())
		switch {
		case t.GetName() == "":
			return nil, invalid(f+".name", "required")
		case !dt.Supported():
			return nil, invalid(f+".datatype", fmt.Sprintf("datatype %q is not supported (use one of %v)", t.GetDatatype(), SupportedDatatypes))
		}
		for j, d := range t.GetShape() {
			if d < 0 {
				return nil, invalid(f+".shape", fmt.Sprintf("dimension %d is %d; dimensions must not be negative", j, d))
			}
		}
		tensor := Tensor{Name: t.GetName(), Datatype: dt, Shape: t.GetShape(), Parameters: fromParams(t.GetParameters())}
		if len(raw) > 0 {
			if t.GetContents() != nil {
				return nil, invalid(f+".contents", "must be empty when raw_input_contents is used")
			}
			if len(raw[i])%dt.Size() != 0 {
				return nil, invalid(fmt.Sprintf("raw_input_contents[%d]", i), fmt.Sprintf("has %d bytes, not a whole number of %s elements", len(raw[i]), dt))
			}
			tensor.Raw = raw[i]
		} else {
			data, err := fromContents(t.GetContents(), dt)
			if err != nil {
				return nil, invalid(f+".contents", err.Error())
			}
			tensor.Raw = data
		}
		req.Inputs = append(req.Inputs, tensor)
	}
	for _, o := range in.GetOutputs() {
		req.Outputs = append(req.Outputs, RequestedOutput{Name: o.GetName(), Parameters: fromParams(o.GetParameters())})
	}
	return req, nil
}

func fromContents(c *pb.InferTensorContents, dt Datatype) ([]byte, error) {
	le := binary.LittleEndian
	var out []byte
	want := contentsField(dt)
	if got := filledContents(c); len(got) > 1 || (len(got) == 1 && got[0] != want) {
		return nil, fmt.Errorf("%s data goes in %s (got %v)", dt, want, got)
	}
	switch dt {
	case Bool:
		for _, v := range c.GetBoolContents() {
			if v {
				out = append(out, 1)
			} else {
				out = append(out, 0)
			}
		}
	case Int8, Int16, Int32:
		bits := dt.Size() * 8
		for k, v := range c.GetIntContents() {
			if int64(v) < minInt(bits) || int64(v) > maxInt(bits) {
				return nil, fmt.Errorf("element %d: %d is out of range for %s", k, v, dt)
			}
			switch bits {
			case 8:
				out = append(out, byte(int8(v)))
			case 16:
				out = le.AppendUint16(out, uint16(int16(v)))
			default:
				out = le.AppendUint32(out, uint32(v))
			}
		}
	case Int64:
		for _, v := range c.GetInt64Contents() {
			out = le.AppendUint64(out, uint64(v))
		}
	case Uint8, Uint16, Uint32:
		bits := dt.Size() * 8
		for k, v := range c.GetUintContents() {
			if bits < 32 && v >= 1<<bits {
				return nil, fmt.Errorf("element %d: %d is out of range for %s", k, v, dt)
			}
			switch bits {
			case 8:
				out = append(out, byte(v))
			case 16:
				out = le.AppendUint16(out, uint16(v))
			default:
				out = le.AppendUint32(out, v)
			}
		}
	case Uint64:
		for _, v := range c.GetUint64Contents() {
			out = le.AppendUint64(out, v)
		}
	case FP32:
		for _, v := range c.GetFp32Contents() {
			out = le.AppendUint32(out, math.Float32bits(v))
		}
	case FP64:
		for _, v := range c.GetFp64Contents() {
			out = le.AppendUint64(out, math.Float64bits(v))
		}
	}
	return out, nil
}

func contentsField(dt Datatype) string {
	switch dt {
	case Bool:
		return "bool_contents"
	case Int8, Int16, Int32:
		return "int_contents"
	case Int64:
		return "int64_contents"
	case Uint8, Uint16, Uint32:
		return "uint_contents"
	case Uint64:
		return "uint64_contents"
	case FP32:
		return "fp32_contents"
	case FP64:
		return "fp64_contents"
	}
	return "bytes_contents"
}

func filledContents(c *pb.InferTensorContents) []string {
	var got []string
	for _, f := range []struct {
		name string
		n    int
	}{
		{"bool_contents", len(c.GetBoolContents())}, {"int_contents", len(c.GetIntContents())},
		{"int64_contents", len(c.GetInt64Contents())}, {"uint_contents", len(c.GetUintContents())},
		{"uint64_contents", len(c.GetUint64Contents())}, {"fp32_contents", len(c.GetFp32Contents())},
		{"fp64_contents", len(c.GetFp64Contents())}, {"bytes_contents", len(c.GetBytesContents())},
	} {
		if f.n > 0 {
			got = append(got, f.name)
		}
	}
	return got
}

// ToProto converts an inference response; raw puts the data in
// raw_output_contents instead of typed contents.
func ToProto(r *InferResponse, raw bool) *pb.ModelInferResponse {
	out := &pb.ModelInferResponse{ModelName: r.ModelName, ModelVersion: r.ModelVersion, Id: r.ID, Parameters: toParams(r.Parameters)}
	for i := range r.Outputs {
		t := &r.Outputs[i]
		o := &pb.ModelInferResponse_InferOutputTensor{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape, Parameters: toParams(t.Parameters)}
		if raw {
			out.RawOutputContents = append(out.RawOutputContents, t.Raw)
		} else {
			o.Contents = toContents(t)
		}
		out.Outputs = append(out.Outputs, o)
	}
	return out
}

func toContents(t *Tensor) *pb.InferTensorContents {
	c := &pb.InferTensorContents{}
	le := binary.LittleEndian
	size := t.Datatype.Size()
	n := t.Len()
	for i := 0; i < n; i++ {
		b := t.Raw[i*size:]
		switch t.Datatype {
		case Bool:
			c.BoolContents = append(c.BoolContents, b[0] != 0)
		case Int8:
			c.IntContents = append(c.IntContents, int32(int8(b[0])))
		case Int16:
			c.IntContents = append(c.IntContents, int32(int16(le.Uint16(b))))
		case Int32:
			c.IntContents = append(c.IntContents, int32(le.Uint32(b)))
		case Int64:
			c.Int64Contents = append(c.Int64Contents, int64(le.Uint64(b)))
		case Uint8:
			c.UintContents = append(c.UintContents, uint32(b[0]))
		case Uint16:
			c.UintContents = append(c.UintContents, uint32(le.Uint16(b)))
		case Uint32:
			c.UintContents = append(c.UintContents, le.Uint32(b))
		case Uint64:
			c.Uint64Contents = append(c.Uint64Contents, le.Uint64(b))
		case FP32:
			c.Fp32Contents = append(c.Fp32Contents, math.Float32frombits(le.Uint32(b)))
		case FP64:
			c.Fp64Contents = append(c.Fp64Contents, math.Float64frombits(le.Uint64(b)))
		}
	}
	return c
}

func fromParams(ps map[string]*pb.InferParameter) map[string]any {
	if len(ps) == 0 {
		return nil
	}
	out := make(map[string]any, len(ps))
	for k, p := range ps {
		switch v := p.GetParameterChoice().(type) {
		case *pb.InferParameter_BoolParam:
			out[k] = v.BoolParam
		case *pb.InferParameter_Int64Param:
			out[k] = v.Int64Param
		case *pb.InferParameter_StringParam:
			out[k] = v.StringParam
		case *pb.InferParameter_DoubleParam:
			out[k] = v.DoubleParam
		case *pb.InferParameter_Uint64Param:
			out[k] = v.Uint64Param
		}
	}
	return out
}

func toParams(ps map[string]any) map[string]*pb.InferParameter {
	if len(ps) == 0 {
		return nil
	}
	out := make(map[string]*pb.InferParameter, len(ps))
	for k, v := range ps {
		switch x := v.(type) {
		case bool:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: x}}
		case string:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: x}}
		case int64:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: x}}
		case uint64:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: x}}
		case float64:
			if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
				out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: int64(x)}}
			} else {
				out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: x}}
			}
		default:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: fmt.Sprint(x)}}
		}
	}
	return out
}
