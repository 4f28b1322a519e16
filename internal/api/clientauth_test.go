package api

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"encoding/pem"
)

// The token goes to the control API only: not to a host it redirects to.
func TestNewClientWith_TokenStaysWithTheControlAPI(t *testing.T) {
	var elsewhere string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere = r.Header.Get("Authorization")
		w.Write([]byte(`{"gateway":"x"}`))
	}))
	defer other.Close()
	var here string
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		here = r.Header.Get("Authorization")
		http.Redirect(w, r, other.URL+"/v1/info", http.StatusFound)
	}))
	defer admin.Close()
	c, err := NewClientWith(admin.URL, ClientOptions{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	if here != "Bearer "+testToken {
		t.Errorf("control API got Authorization %q", here)
	}
	if elsewhere != "" {
		t.Errorf("the redirect's target got Authorization %q", elsewhere)
	}
}

func TestNewClientWith_CACert(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"gateway":"g","version":"v"}`))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	// With the CA, host:port means https.
	c, err := NewClientWith(srv.Listener.Addr().String(), ClientOptions{CACert: ca})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := c.Info(t.Context()); err != nil || info.Version != "v" {
		t.Fatalf("Info over TLS with --ca-cert: %+v, %v", info, err)
	}
	plain, _ := NewClientWith(srv.URL, ClientOptions{})
	if _, err := plain.Info(t.Context()); err == nil {
		t.Error("a client without the CA trusted a self-signed certificate")
	}
	if _, err := NewClientWith(srv.URL, ClientOptions{CACert: filepath.Join(t.TempDir(), "none.pem")}); err == nil {
		t.Error("a missing --ca-cert file was accepted")
	}
}
