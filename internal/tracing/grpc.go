package tracing

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// GRPCOptions returns the server options that give each gRPC call its
// gateway span, as Handler does for HTTP: a stats handler, which runs
// before any interceptor, so that admission is inside the span. On a nil
// Tracer it returns none.
func (t *Tracer) GRPCOptions() []grpc.ServerOption {
	if t == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(grpcStats{t})}
}

type grpcStats struct{ t *Tracer }

func (h grpcStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if strings.HasSuffix(info.FullMethodName, "/ServerLive") || strings.HasSuffix(info.FullMethodName, "/ServerReady") {
		return ctx
	}
	md, _ := metadata.FromIncomingContext(ctx)
	pctx := ctx
	if len(md["traceparent"]) > 0 {
		pctx = h.t.prop.Extract(ctx, metadataCarrier(md))
	}
	if !h.t.sampler.sample(trace.SpanContextFromContext(pctx)) {
		return ctx
	}
	ctx, span := h.t.tracer.Start(pctx, SpanGateway, serverSpan...)
	if span.IsRecording() {
		service, method, _ := strings.Cut(strings.TrimPrefix(info.FullMethodName, "/"), "/")
		span.SetAttributes(semconv.RPCSystemNameGRPC, semconv.RPCMethod(service+"/"+method))
	}
	return ctx
}

func (grpcStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok {
		return
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return // not sampled
	}
	if end.Error != nil {
		st, _ := status.FromError(end.Error)
		span.SetAttributes(semconv.RPCResponseStatusCode(st.Code().String()))
		span.SetStatus(codes.Error, st.Message())
	}
	span.End()
}

func (grpcStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (grpcStats) HandleConn(context.Context, stats.ConnStats) {}

// metadataCarrier reads a traceparent from gRPC metadata.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
