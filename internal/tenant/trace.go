package tenant

import "tandem/internal/gateway"

// SpanName names the stage's span in a request's trace.
func (*Stage) SpanName() string { return "authenticate" }

var _ gateway.SpanNamer = (*Stage)(nil)
