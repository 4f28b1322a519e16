// Package pb holds the Go code generated from proto/grpc_predict_v2.proto:
// the Open Inference Protocol v2 gRPC messages and GRPCInferenceService.
// The generated files are committed so that builds need no protoc.
//
// proto/grpc_predict_v2.proto is the official open_inference_grpc.proto
// from kserve/open-inference-protocol (specification/protocol/, commit
// d49cc23) with one line added, its go_package option; a test in package
// inference holds it to the copy in internal/inference/testdata.
package pb

// Regenerating needs protoc (Debian: protobuf-compiler) and
//   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//go:generate protoc -I ../../../proto --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative grpc_predict_v2.proto
