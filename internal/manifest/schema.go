package manifest

import _ "embed"

// Schema is the manifest's JSON schema (draft 2020-12), for editors and for
// tools that check manifests before they reach tandem. It is at least as
// strict as Parse about field names and types; checks that a schema cannot
// express (min <= max, panic_window <= stable_window) are left to Validate.
// schema_test.go keeps its property names in step with the Go types.
//
//go:embed schema.json
var Schema []byte
