package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"tandem/internal/inference/pb"
)

const testToken = "t0ken-for-tests-0123456789abcdef"

func TestCheckAdminListen(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8081": true, "127.0.0.1:0": true, "localhost:8081": true, "[::1]:8081": true, "127.3.4.5:1": true,
		"0.0.0.0:8081": false, ":8081": false, "[::]:8081": false, "192.168.1.5:8081": false,
		"tandem.example.com:8081": false, "10.0.0.1:0": false, "": false, "127.0.0.1": false,
	} {
		err := checkAdminListen(addr)
		if (err == nil) != ok {
			t.Errorf("checkAdminListen(%q) = %v, want ok=%v", addr, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--admin-token-file") {
			t.Errorf("the refusal does not say how to set a token: %v", err)
		}
	}
}

// A control API off loopback without a token does not start: nothing is
// created, nothing listens.
func TestRun_RefusesOpenAdminWithoutToken(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0"} {
		t.Run(addr, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			err := Run(t.Context(), Config{Listen: "127.0.0.1:0", AdminListen: addr, DataDir: dir, Backend: "process",
				Docker: "off", Logger: discard()})
			if err == nil || !strings.Contains(err.Error(), "--admin-token-file") || !strings.Contains(err.Error(), "TANDEM_ADMIN_TOKEN") {
				t.Fatalf("Run = %v, want a refusal that says how to set a token", err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created before the refusal: %v", err)
			}
		})
	}
}

func TestOpenSecurity_Token(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name      string
		cfg       Config
		wantToken string
		wantErr   string
	}{
		{"file with newline", Config{AdminTokenFile: file("ok", testToken+"\n"), AdminListen: "0.0.0.0:1"}, testToken, ""},
		{"env", Config{AdminToken: testToken, AdminListen: "0.0.0.0:1"}, testToken, ""},
		{"both", Config{AdminToken: testToken, AdminTokenFile: file("ok2", testToken)}, "", "both"},
		{"missing file", Config{AdminTokenFile: filepath.Join(dir, "nope")}, "", "--admin-token-file"},
		{"empty file", Config{AdminTokenFile: file("empty", "\n")}, "", "empty"},
		{"short", Config{AdminToken: "short-s3cret"}, "", "at least 16"},
		{"space inside", Config{AdminToken: "abcdefgh ijklmnopqrstu"}, "", "printable"},
		{"no token on loopback", Config{AdminListen: "127.0.0.1:0"}, "", ""},
		{"half TLS", Config{AdminListen: "127.0.0.1:0", TLSCert: "c.pem"}, "", "go together"},
		{"bad TLS", Config{AdminListen: "127.0.0.1:0", TLSCert: file("c.pem", "x"), TLSKey: file("k.pem", "y")}, "", "--tls-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec, err := openSecurity(tc.cfg, discard())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
				}
				for _, secret := range []string{"short-s3cret", "ijklmnop", testToken} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("the error shows the token: %v", err)
					}
				}
				return
			}
			if err != nil || sec.token != tc.wantToken {
				t.Fatalf("token %q, err %v; want %q", sec.token, err, tc.wantToken)
			}
		})
	}
}

// tandem serve with a token and TLS: every listener serves TLS with the
// given certificate, the control API needs the token (not /healthz), and
// the token shows neither in the log nor in the data dir.
func TestRun_TokenAndTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", GRPCListen: "127.0.0.1:0", GRPCRequired: true,
			DataDir: dataDir, Backend: "process", Docker: "off", Tick: 100 * time.Millisecond, MaxInstances: 4,
			AdminTokenFile: tokenFile, TLSCert: certFile, TLSKey: keyFile, Version: "test",
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	gateway, admin, grpcAddr := serving(t, logs, done)
	if !strings.Contains(logs.String(), "tls=true admin_auth=token") {
		t.Errorf("the serving line does not say tls and token:\n%s", logs)
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(url, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.TLS == nil {
			t.Errorf("GET %s: not over TLS", url)
		}
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		url, token string
		code       int
	}{
		{"https://" + admin + "/healthz", "", 200},
		{"https://" + admin + "/v1/info", "", 401},
		{"https://" + admin + "/metrics", "", 401},
		{"https://" + admin + "/metrics", "wrong-token-0123456789", 401},
		{"https://" + admin + "/v1/cost/live", "", 401},
		{"https://" + admin + "/v1/info", testToken, 200},
		{"https://" + admin + "/metrics", testToken, 200},
		{"https://" + admin + "/v1/cost/live", testToken, 200},
		{"https://" + gateway + "/models/nothing/x", "", 404},
	} {
		if code, body := get(tc.url, tc.token); code != tc.code {
			t.Errorf("GET %s (token %v): %d %s, want %d", tc.url, tc.token != "", code, body, tc.code)
		}
	}
	// Plain HTTP is not answered as HTTP on a TLS listener.
	if resp, err := http.Get("http://" + admin + "/healthz"); err == nil {
		if resp.StatusCode == 200 {
			t.Error("the admin listener answered plain HTTP")
		}
		resp.Body.Close()
	}
	// gRPC over TLS.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gctx, gcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer gcancel()
	if live, err := pb.NewGRPCInferenceServiceClient(conn).ServerLive(gctx, &pb.ServerLiveRequest{}); err != nil || !live.Live {
		t.Errorf("gRPC ServerLive over TLS: %v, %v", live, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	done <- nil // for the cleanup
	if strings.Contains(logs.String(), testToken) {
		t.Errorf("the log shows the token:\n%s", logs)
	}
	assertNotInTree(t, dataDir, testToken)
}

// assertNotInTree fails if any file under root holds secret.
func assertNotInTree(t *testing.T, root, secret string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n++
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the token", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Errorf("no file under %s: nothing was checked", root)
	}
}

var servingRE = regexp.MustCompile(`msg="tandem serving" gateway=(\S+) admin=(\S+) grpc=(\S+)`)

func serving(t *testing.T, logs *syncBuffer, done chan error) (gateway, admin, grpc string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := servingRE.FindStringSubmatch(logs.String()); m != nil {
			return m[1], m[2], m[3]
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Run returned at start: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after 30s:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1, ::1 and
// localhost, and returns its files and a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tandem test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// syncBuffer is a bytes.Buffer safe for a logging server and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
