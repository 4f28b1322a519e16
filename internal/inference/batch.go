package inference

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"tandem/internal/batcher"
	"tandem/internal/manifest"
	"tandem/internal/problem"
	"tandem/internal/tracing"
)

type batchItem struct {
	model Model
	req   *InferRequest
	rows  int64
	wait  tracing.Span // the request's batch wait, ended when the batch runs
}

type batchResult struct {
	resp *InferResponse
	cold bool
	err  error
}

type modelBatcher struct {
	cfg manifest.Batching
	b   *batcher.Batcher[*batchItem, batchResult]
}

// batcherFor returns the batcher of m, or nil when batching is off or the
// model's inputs and outputs cannot be stacked. A changed batching config
// (a redeploy) gets a new batcher; batches already open finish on the old.
func (s *Service) batcherFor(m Model) *modelBatcher {
	if m.Batching == nil || m.Metadata == nil || m.Batching.MaxBatchSize <= 1 || !m.Metadata.Batchable() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.batchers[m.Name]
	if mb == nil || mb.cfg != *m.Batching {
		name := m.Name
		mb = &modelBatcher{cfg: *m.Batching}
		mb.b = batcher.New(batcher.Config{
			MaxSize:  m.Batching.MaxBatchSize,
			MaxDelay: m.Batching.MaxDelay.D(),
			Observe:  func(st batcher.Stats) { s.metrics.observe(name, st) },
		}, s.runBatch)
		s.batchers[m.Name] = mb
	}
	return mb
}

// batchKey returns the key under which req may share a batch, and its rows
// (the first dimension, the same for every input). A non-empty reason says
// why req must go alone.
func batchKey(m Model, req *InferRequest) (key string, rows int64, reason string) {
	if !onlyFormatParams(req.Parameters, ParamBinaryDataOutput) {
		return "", 0, "parameters"
	}
	var b strings.Builder
	b.WriteString(m.Name)
	rows = -1
	for _, in := range req.Inputs {
		if len(in.Parameters) > 0 {
			return "", 0, "parameters"
		}
		if len(in.Shape) == 0 || in.Shape[0] < 1 {
			return "", 0, "shape"
		}
		if rows >= 0 && in.Shape[0] != rows {
			return "", 0, "shape"
		}
		rows = in.Shape[0]
		b.WriteByte(0)
		b.WriteString(in.Name)
		b.WriteByte(' ')
		b.WriteString(string(in.Datatype))
		for _, d := range in.Shape[1:] {
			b.WriteByte(' ')
			b.WriteString(strconv.FormatInt(d, 10))
		}
	}
	b.WriteString("\x00->")
	for _, o := range req.Outputs {
		if !onlyFormatParams(o.Parameters, ParamBinaryData) {
			return "", 0, "parameters"
		}
		b.WriteByte(0)
		b.WriteString(o.Name)
	}
	return b.String(), rows, ""
}

// onlyFormatParams reports whether ps holds nothing but the parameter
// that picks the response format (which each caller gets its own way).
func onlyFormatParams(ps map[string]any, format string) bool {
	for k := range ps {
		if k != format {
			return false
		}
	}
	return true
}

// runBatch stacks the requests of one batch along the first dimension,
// makes one call, and splits the outputs back by rows.
func (s *Service) runBatch(ctx context.Context, items []*batchItem) ([]batchResult, error) {
	ctx, span := batchRuns(ctx, items)
	defer span.End(nil)
	m := items[0].model
	if len(items) == 1 {
		resp, cold, err := s.call(ctx, m, items[0].req)
		return []batchResult{{resp: resp, cold: cold, err: err}}, nil
	}
	var total int64
	for _, it := range items {
		total += it.rows
	}
	first := items[0].req
	stacked := &InferRequest{Inputs: make([]Tensor, len(first.Inputs))}
	for _, o := range first.Outputs {
		stacked.Outputs = append(stacked.Outputs, RequestedOutput{Name: o.Name})
	}
	for j, t := range first.Inputs {
		n := 0
		for _, it := range items {
			n += len(it.req.Inputs[j].Raw)
		}
		raw := make([]byte, 0, n)
		for _, it := range items {
			raw = append(raw, it.req.Inputs[j].Raw...)
		}
		shape := slices.Clone(t.Shape)
		shape[0] = total
		stacked.Inputs[j] = Tensor{Name: t.Name, Datatype: t.Datatype, Shape: shape, Raw: raw}
	}
	resp, cold, err := s.call(ctx, m, stacked)
	if err != nil {
		return nil, err
	}
	outs, err := split(m.Name, resp.Outputs, items, total)
	if err != nil {
		return nil, err
	}
	results := make([]batchResult, len(items))
	for i, it := range items {
		results[i] = batchResult{cold: cold, resp: &InferResponse{
			ModelName:    resp.ModelName,
			ModelVersion: resp.ModelVersion,
			ID:           it.req.ID,
			Parameters:   resp.Parameters,
			Outputs:      outs[i],
		}}
	}
	return results, nil
}

// split cuts each output along its first dimension into the rows of each
// item.
func split(model string, outputs []Tensor, items []*batchItem, total int64) ([][]Tensor, error) {
	res := make([][]Tensor, len(items))
	for i := range res {
		res[i] = make([]Tensor, len(outputs))
	}
	for j, o := range outputs {
		size := int64(o.Datatype.Size())
		if len(o.Shape) == 0 || o.Shape[0] != total || size == 0 || int64(len(o.Raw))%total != 0 {
			return nil, problem.New(http.StatusBadGateway, "batch_split_failed",
				fmt.Sprintf("model %q: output %q has shape %s, which cannot be split into a batch of %d rows; turn batching off for this model",
					model, o.Name, FormatShape(o.Shape), total))
		}
		rowBytes := int64(len(o.Raw)) / total
		var off int64
		for i, it := range items {
			shape := slices.Clone(o.Shape)
			shape[0] = it.rows
			end := off + it.rows*rowBytes
			res[i][j] = Tensor{Name: o.Name, Datatype: o.Datatype, Shape: shape, Parameters: o.Parameters, Raw: o.Raw[off:end:end]}
			off = end
		}
	}
	return res, nil
}
