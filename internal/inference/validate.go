package inference

import (
	"fmt"
	"net/http"
	"strings"

	"tandem/internal/problem"
)

// Mismatch is the Details of a validation error: what the model expects and
// what the request sent.
type Mismatch struct {
	Expected any `json:"expected"`
	Received any `json:"received"`
}

// Validate checks a decoded request against the model's metadata: every
// input known, given once and all of the model's inputs given, datatypes
// equal, shapes of the right rank with fixed dimensions equal, element
// counts equal to what the shapes call for, and requested outputs known.
// Every error is a *problem.Error with status 400, the field, and for
// mismatches a Mismatch in Details.
func Validate(req *InferRequest, md *ModelMetadata) error {
	bad := func(field, msg string, details any) error {
		e := problem.New(http.StatusBadRequest, CodeInvalidInput, msg).WithField(field)
		e.Details = details
		return e
	}
	if len(req.Inputs) == 0 {
		return bad("inputs", "no inputs given; the model takes "+describe(md.Inputs), nil)
	}
	seen := make(map[string]bool, len(req.Inputs))
	for i := range req.Inputs {
		in := &req.Inputs[i]
		f := fmt.Sprintf("inputs[%d]", i)
		want := md.Input(in.Name)
		if want == nil {
			return bad(f+".name", fmt.Sprintf("the model has no input %q; its inputs are %s", in.Name, describe(md.Inputs)),
				Mismatch{Expected: names(md.Inputs), Received: in.Name})
		}
		if seen[in.Name] {
			return bad(f+".name", fmt.Sprintf("input %q is given twice", in.Name), nil)
		}
		seen[in.Name] = true
		if in.Datatype != want.Datatype {
			return bad(f+".datatype", fmt.Sprintf("input %q is %s, not %s", in.Name, want.Datatype, in.Datatype),
				Mismatch{Expected: want.Datatype, Received: in.Datatype})
		}
		if !shapeFits(in.Shape, want.Shape) {
			return bad(f+".shape", fmt.Sprintf("shape %s does not match input %q's shape %s (-1: any size)",
				FormatShape(in.Shape), in.Name, FormatShape(want.Shape)),
				Mismatch{Expected: want.Shape, Received: in.Shape})
		}
		n, ok := Elements(in.Shape)
		if !ok {
			return bad(f+".shape", fmt.Sprintf("shape %s is too large", FormatShape(in.Shape)), nil)
		}
		if got := int64(in.Len()); got != n || len(in.Raw)%in.Datatype.Size() != 0 {
			return bad(f+".data", fmt.Sprintf("has %d elements; shape %s needs %d", got, FormatShape(in.Shape), n),
				Mismatch{Expected: n, Received: got})
		}
	}
	if len(seen) < len(md.Inputs) {
		var missing []string
		for _, t := range md.Inputs {
			if !seen[t.Name] {
				missing = append(missing, t.String())
			}
		}
		return bad("inputs", "missing input "+strings.Join(missing, ", "), Mismatch{Expected: names(md.Inputs), Received: names(inputMeta(req.Inputs))})
	}
	outSeen := make(map[string]bool, len(req.Outputs))
	for j, o := range req.Outputs {
		f := fmt.Sprintf("outputs[%d].name", j)
		if md.Output(o.Name) == nil {
			return bad(f, fmt.Sprintf("the model has no output %q; its outputs are %s", o.Name, describe(md.Outputs)),
				Mismatch{Expected: names(md.Outputs), Received: o.Name})
		}
		if outSeen[o.Name] {
			return bad(f, fmt.Sprintf("output %q is asked for twice", o.Name), nil)
		}
		outSeen[o.Name] = true
	}
	return nil
}

func shapeFits(got, want []int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i, w := range want {
		if w >= 0 && got[i] != w {
			return false
		}
	}
	return true
}

func describe(ts []TensorMetadata) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.String()
	}
	return strings.Join(parts, ", ")
}

func names(ts []TensorMetadata) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

func inputMeta(ts []Tensor) []TensorMetadata {
	out := make([]TensorMetadata, len(ts))
	for i, t := range ts {
		out[i] = TensorMetadata{Name: t.Name}
	}
	return out
}
