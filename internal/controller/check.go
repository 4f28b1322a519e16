package controller

import (
	"errors"
	"fmt"
	"net/http"

	"tandem/internal/backend"
	"tandem/internal/manifest"
	"tandem/internal/problem"
)

// checkFields asks m's backend whether it honours every field m sets
// (backend.Checker) and turns a refusal into a 400 invalid_manifest
// problem: its field is the first one refused, its details list them all
// (as a manifest's own problems are listed).
func checkFields(m *manifest.Manifest, be backend.Backend, rb backend.ReplicaBackend) error {
	var ck backend.Checker
	if be != nil {
		ck, _ = be.(backend.Checker)
	} else {
		ck, _ = rb.(backend.Checker)
	}
	if ck == nil {
		return nil
	}
	err := ck.Check(m)
	if err == nil {
		return nil
	}
	pe := problem.Wrap(err, http.StatusBadRequest, "invalid_manifest")
	pe.Message = fmt.Sprintf("model %q: %v", m.Name, err)
	var me *manifest.Error
	if errors.As(err, &me) && len(me.Problems) > 0 {
		pe = pe.WithField(me.Problems[0].Field)
		pe.Details = me.Problems
	}
	return pe
}
