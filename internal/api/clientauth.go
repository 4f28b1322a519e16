package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// ClientOptions say how a Client proves who it is to the control API and
// which certificates it trusts.
type ClientOptions struct {
	// Token, when set, is sent as Authorization: Bearer TOKEN, to the
	// control API's own scheme and host only (never after a redirect
	// elsewhere).
	Token string
	// CACert is a PEM file of certificate authorities to trust besides
	// the system's. With it, an address without a scheme means https.
	CACert string
}

// NewClientWith is NewClient with a token and a trusted CA.
func NewClientWith(addr string, o ClientOptions) (*Client, error) {
	if o.CACert != "" && !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	c := NewClient(addr)
	tr, err := Transport(o.CACert)
	if err != nil {
		return nil, err
	}
	var rt http.RoundTripper = tr
	if o.Token != "" {
		u, err := url.Parse(c.Base)
		if err != nil {
			return nil, fmt.Errorf("control API address %q: %w", addr, err)
		}
		rt = &bearer{scheme: u.Scheme, host: u.Host, header: "Bearer " + o.Token, next: tr}
	}
	c.HTTP = &http.Client{Transport: rt}
	return c, nil
}

// Transport returns an HTTP transport (the default one's settings) that
// trusts the system's certificate authorities and those in the PEM file
// caFile ("" = the system's only).
func Transport(caFile string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("--ca-cert " + caFile + ": no PEM certificate in it")
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

// bearer adds the token to requests for the control API's origin.
type bearer struct {
	scheme, host, header string
	next                 http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != b.scheme || !strings.EqualFold(r.URL.Host, b.host) {
		return b.next.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", b.header)
	return b.next.RoundTrip(r2)
}
