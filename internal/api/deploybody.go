package api

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	"tandem/internal/problem"
)

// decodeDeploy reads a deploy request: a DeployRequest as JSON (what the
// command line sends), or, with a YAML Content-Type, the manifest itself,
// with ?base_dir= for relative paths (curl --data-binary @m.yaml).
func decodeDeploy(w http.ResponseWriter, r *http.Request) (DeployRequest, *problem.Error) {
	var req DeployRequest
	body := http.MaxBytesReader(w, r.Body, maxManifest)
	tooLarge := func(err error) bool {
		var mbe *http.MaxBytesError
		return errors.As(err, &mbe)
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); isYAML(mt) {
		b, err := io.ReadAll(body)
		if tooLarge(err) {
			return req, problem.New(http.StatusRequestEntityTooLarge, "too_large", "deploy request over 1 MiB")
		}
		if err != nil {
			return req, problem.New(http.StatusBadRequest, "malformed_body", "reading the manifest: "+err.Error())
		}
		return DeployRequest{Manifest: string(b), BaseDir: r.URL.Query().Get("base_dir")}, nil
	}
	if err := json.NewDecoder(body).Decode(&req); err != nil {
		if tooLarge(err) {
			return req, problem.New(http.StatusRequestEntityTooLarge, "too_large", "deploy request over 1 MiB")
		}
		return req, problem.New(http.StatusBadRequest, "malformed_json", "deploy request is not valid JSON: "+err.Error())
	}
	return req, nil
}
