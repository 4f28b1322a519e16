// Package inference speaks the Open Inference Protocol v2 for tandem's
// gateway: the v2 types and their JSON (and binary data extension)
// encoding, validation of requests against a model's metadata, the REST
// handler for /v2, the gRPC GRPCInferenceService, and dynamic batching.
//
// Who owns what:
//   - The gateway owns the models: Models is read per request and must be a
//     cheap lookup in an immutable snapshot; this package never caches a
//     Model beyond one request.
//   - A Service owns one batcher per model name (guarded by Service.mu, made
//     on first use, replaced when the model's batching config changes). A
//     batcher owns its open batches (see package batcher); a batch, once
//     closed, belongs to the goroutine that sends it, and each caller waits
//     for its own result.
//   - Upstream owns waking and choosing instances; this package only builds
//     requests for it and reads its answers.
//
// The request path: read the body (bounded), decode it in one pass (data
// straight into raw little-endian bytes), validate it against the cached
// metadata, then send it on in the binary data extension, alone or through
// the batcher, which stacks tensors by rows and splits the outputs back.
// Models without metadata (not the built-in runtime) get the body as it came.
package inference
