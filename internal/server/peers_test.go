package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestPeerAddr(t *testing.T) {
	for _, tc := range []struct {
		name, flag, podIP string
		admin             net.Addr
		want              string
	}{
		{"flag wins", "10.1.2.3:9000", "10.0.0.7", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}, "10.1.2.3:9000"},
		{"pod IP and the admin port", "", "10.0.0.7", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}, "10.0.0.7:8081"},
		{"pod IPv6", "", "fd00::7", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}, "[fd00::7]:8081"},
		{"the admin address", "", "", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41234}, "127.0.0.1:41234"},
		{"every address names none", "", "", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}, ""},
		{"every IPv6 address names none", "", "", &net.TCPAddr{IP: net.IPv6unspecified, Port: 8081}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POD_IP", tc.podIP)
			if got := peerAddr(tc.flag, tc.admin); got != tc.want {
				t.Fatalf("peerAddr = %q, want %q", got, tc.want)
			}
		})
	}
}

// A follower trusts the leader's certificate when it is the one it serves
// itself (one Secret for every replica), whatever names it holds, and no
// other.
func TestPinnedTLS(t *testing.T) {
	leader := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer leader.Close()
	get := func(own *tls.Config) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: pinnedTLS(own)}}
		resp, err := c.Get(leader.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(leader.TLS); err != nil {
		t.Fatalf("the same certificate: %v", err)
	}
	certFile, keyFile, _ := selfSigned(t, t.TempDir())
	other, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := get(&tls.Config{Certificates: []tls.Certificate{other}}); err == nil {
		t.Fatal("a follower with another certificate trusted the leader's")
	}
	if err := get(&tls.Config{}); err == nil {
		t.Fatal("a follower with no certificate trusted the leader's")
	}
}
