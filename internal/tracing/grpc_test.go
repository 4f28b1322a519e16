package tracing_test

import (
	"context"
	"net"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"tandem/internal/tracing"
)

// TestGRPCOptions_ContinuesCallersTrace: a gRPC call's gateway span is in
// the caller's trace and in the context that interceptors and the handler
// see.
func TestGRPCOptions_ContinuesCallersTrace(t *testing.T) {
	tr, spans := newTracer(t, nil)
	var inHandler trace.SpanContext
	srv := grpc.NewServer(append(tr.GRPCOptions(), grpc.ChainUnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			inHandler = trace.SpanContextFromContext(ctx)
			return h(ctx, req)
		}))...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", callerParent)
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	srv.GracefulStop()
	gw := one(t, spans(), tracing.SpanGateway)
	if gw.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || gw.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("gateway span in trace %v under %v", gw.SpanContext.TraceID(), gw.Parent.SpanID())
	}
	if inHandler.SpanID() != gw.SpanContext.SpanID() {
		t.Fatalf("the interceptor saw span %v, want the gateway span %v", inHandler.SpanID(), gw.SpanContext.SpanID())
	}
	if v, _ := attr(gw, "rpc.method"); v != "grpc.health.v1.Health/Check" {
		t.Fatalf("rpc.method %q", v)
	}
}
