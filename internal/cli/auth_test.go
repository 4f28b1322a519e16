package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The CLI sends --token, or $TANDEM_TOKEN, to the control API, and never
// shows the token in --help.
func TestClient_Token(t *testing.T) {
	const tok = "cli-test-token-0123456789"
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		w.Write([]byte(`[]`))
	}))
	defer srv.Close()

	t.Setenv("TANDEM_TOKEN", tok)
	for _, args := range [][]string{
		{"--admin", srv.URL, "ls"},
		{"--admin", srv.URL, "--token", tok + "-flag", "ls"},
	} {
		root := NewRoot()
		root.SetArgs(args)
		root.SetOut(&bytes.Buffer{})
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if want := []string{"Bearer " + tok, "Bearer " + tok + "-flag"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Authorization headers %q, want %q", got, want)
	}

	root := NewRoot()
	var help bytes.Buffer
	root.SetOut(&help)
	root.SetArgs([]string{"--help"})
	root.Execute()
	if strings.Contains(help.String(), tok) {
		t.Errorf("--help shows $TANDEM_TOKEN:\n%s", help.String())
	}
	if !strings.Contains(help.String(), "--token") || !strings.Contains(help.String(), "--ca-cert") {
		t.Errorf("--help lacks --token or --ca-cert:\n%s", help.String())
	}
}
