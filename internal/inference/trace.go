package inference

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"tandem/internal/tracing"
)

// batchRuns ends the batch wait of each item in a batch that starts to run
// and, for a batch of several requests, starts the batch's span: a child of
// the first request's span (the run has its context, so the instance call
// is drawn there), linked to every request's wait.
func batchRuns(ctx context.Context, items []*batchItem) (context.Context, tracing.Span) {
	if !tracing.Enabled() {
		return ctx, tracing.Span{}
	}
	links := make([]trace.Link, 0, len(items))
	for _, it := range items {
		it.wait.Set(tracing.AttrBatchSize.Int(len(items)))
		it.wait.End(nil)
		if sc := it.wait.SpanContext(); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	if len(items) < 2 {
		return ctx, tracing.Span{}
	}
	return tracing.FromContext(ctx).Start(ctx, tracing.SpanBatch, trace.WithLinks(links...),
		trace.WithAttributes(tracing.AttrBatchSize.Int(len(items))))
}
