package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/api"
	"tandem/internal/testbin"
)

const e2eToken = "e2e-admin-token-7f3c9a1b5d2e4f60"

// newServer is startServer with extra flags and environment.
func newServer(t *testing.T, env []string, args ...string) (*server, error) {
	t.Helper()
	s := &server{t: t, bin: testbin.Build(t, "tandem/cmd/tandem"), dataDir: t.TempDir(), extraEnv: env, extraArgs: args}
	err := s.startOnce()
	t.Cleanup(func() { s.stop(syscall.SIGTERM) })
	return s, err
}

// cli runs the tandem command line with env added to the environment.
func (s *server) cli(env []string, args ...string) (string, error) {
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// markerManifest is a dedicated deployment whose command first writes its
// environment to marker, then runs the fake model.
func markerManifest(t *testing.T, name, marker string) string {
	bin := testbin.Build(t, "tandem/cmd/fakemodel")
	return fmt.Sprintf("name: %s\nmode: dedicated\nruntime:\n  command: [/bin/sh, -c, 'env > %s; exec %s']\n  health: /health\n",
		name, marker, bin)
}

func adminDo(t *testing.T, hc *http.Client, method, url string, hdr map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// Without a token, tandem serve does not start on a non-loopback admin
// address, and says how to set one.
func TestSecurity_OpenAdminRefusedWithoutToken(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			s, err := newServer(t, nil, "--admin-listen", addr)
			if err == nil {
				t.Fatalf("tandem serve --admin-listen %s started without a token", addr)
			}
			<-s.exited
			if code := s.cmd.ProcessState.ExitCode(); code == 0 {
				t.Errorf("exit code 0")
			}
			for _, want := range []string{"--admin-token-file", "TANDEM_ADMIN_TOKEN", "TANDEM_TOKEN"} {
				if !strings.Contains(s.log.String(), want) {
					t.Errorf("the refusal does not mention %s:\n%s", want, s.log)
				}
			}
		})
	}
}

// What a web page in the user's browser can send (a cross-origin post, a
// DNS-rebound Host, a text/plain body) does not deploy anything; the same
// manifest through the CLI does.
func TestSecurity_BrowserRequestsStartNothing(t *testing.T) {
	s, err := newServer(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	body, _ := json.Marshal(api.DeployRequest{Manifest: markerManifest(t, "pwn", marker)})
	url := "http://" + s.admin + "/v1/deployments"
	_, port, _ := net.SplitHostPort(s.admin)
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		code int
	}{
		{"cross origin", map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, 403},
		{"cross origin, text/plain", map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403},
		{"DNS rebinding", map[string]string{"Content-Type": "application/json", "Host": "evil.example:" + port}, 403},
		{"DNS rebinding, own origin", map[string]string{"Content-Type": "application/json", "Host": "evil.example:" + port,
			"Origin": "http://evil.example:" + port}, 403},
		{"text/plain", map[string]string{"Content-Type": "text/plain"}, 415},
		{"form", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
	} {
		code, _, answer := adminDo(t, client, "POST", url, tc.hdr, string(body))
		if code != tc.code || !strings.Contains(answer, `"error"`) {
			t.Errorf("%s: %d %s, want %d in tandem's problem shape", tc.name, code, answer, tc.code)
		}
	}
	var list []any
	if code, _, answer := adminDo(t, client, "GET", url, nil, ""); code != 200 || json.Unmarshal([]byte(answer), &list) != nil || len(list) != 0 {
		t.Fatalf("deployments after refused deploys: %d %s, want none", code, answer)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("a refused deploy started the command (%s: %v)", marker, err)
	}
	// The same manifest, deployed as the CLI does, runs: the refusals above
	// are what kept it from running.
	f := filepath.Join(dir, "m.yaml")
	writeFile(t, f, markerManifest(t, "pwn", marker))
	if out, err := s.tandem("deploy", "-f", f); err != nil {
		t.Fatalf("deploy through the CLI: %v\n%s", err, out)
	}
	waitFile(t, marker)
	// The audit log has the refusals and the deploy.
	raw, err := os.ReadFile(filepath.Join(s.dataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	var statuses []int
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e api.AuditEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		statuses = append(statuses, e.Status)
		if e.Status == 201 && (e.Name != "pwn" || e.Auth != api.AuthLoopback) {
			t.Errorf("deploy's audit entry: %+v", e)
		}
	}
	if want := "[403 403 403 403 415 415 201]"; fmt.Sprint(statuses) != want {
		t.Errorf("audit statuses %v, want %s:\n%s", statuses, want, raw)
	}
}

// With a token: every control route but /healthz needs it, the CLI sends it
// from TANDEM_TOKEN, and it shows nowhere: not in the log, the data dir, an
// instance's environment or an error.
func TestSecurity_Token(t *testing.T) {
	s, err := newServer(t, []string{"TANDEM_ADMIN_TOKEN=" + e2eToken}, "--admin-listen", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(s.admin)
	admin := "127.0.0.1:" + port
	base := "http://" + admin
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		body         string
		code         int
	}{
		{"GET", "/healthz", nil, "", 200},
		{"GET", "/v1/deployments", nil, "", 401},
		{"GET", "/metrics", nil, "", 401},
		{"GET", "/v1/cost", nil, "", 401},
		{"GET", "/v1/deployments", map[string]string{"Authorization": "Bearer " + e2eToken[:20]}, "", 401},
		{"POST", "/v1/deployments", map[string]string{"Content-Type": "application/json"}, "{}", 401},
		{"GET", "/v1/deployments", map[string]string{"Authorization": "Bearer " + e2eToken}, "", 200},
		{"GET", "/metrics", map[string]string{"Authorization": "Bearer " + e2eToken}, "", 200},
		// A name other than loopback's is fine with a token.
		{"GET", "/v1/info", map[string]string{"Authorization": "Bearer " + e2eToken, "Host": "tandem.example:" + port}, "", 200},
	} {
		code, h, answer := adminDo(t, client, tc.method, base+tc.path, tc.hdr, tc.body)
		if code != tc.code {
			t.Errorf("%s %s %v: %d %s, want %d", tc.method, tc.path, tc.hdr != nil, code, answer, tc.code)
		}
		if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer")
		}
	}
	// A deploy with the token: 201.
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	body, _ := json.Marshal(api.DeployRequest{Manifest: markerManifest(t, "withtoken", envFile)})
	code, _, answer := adminDo(t, client, "POST", base+"/v1/deployments",
		map[string]string{"Authorization": "Bearer " + e2eToken, "Content-Type": "application/json"}, string(body))
	if code != 201 {
		t.Fatalf("deploy with the token: %d %s", code, answer)
	}
	waitFile(t, envFile)

	// The CLI: without a token it says what is missing; with TANDEM_TOKEN
	// (or --token) it works.
	out, err := s.cli(nil, "--admin", admin, "ls")
	if err == nil || !strings.Contains(out, "TANDEM_TOKEN") {
		t.Errorf("ls without a token: %v %s, want an error naming TANDEM_TOKEN", err, out)
	}
	out, err = s.cli([]string{"TANDEM_TOKEN=wrong-" + e2eToken}, "--admin", admin, "ls")
	if err == nil || strings.Contains(out, e2eToken) {
		t.Errorf("ls with a wrong token: %v %s", err, out)
	}
	f := filepath.Join(dir, "m.yaml")
	writeFile(t, f, fakeManifest(t, "viacli", "dedicated", nil, "min: 1\nmax: 1", "startup: 20s"))
	if out, err := s.cli([]string{"TANDEM_TOKEN=" + e2eToken}, "--admin", admin, "deploy", "-f", f); err != nil {
		t.Fatalf("deploy with TANDEM_TOKEN: %v\n%s", err, out)
	}
	if out, err := s.cli(nil, "--admin", admin, "--token", e2eToken, "ls"); err != nil || !strings.Contains(out, "viacli") {
		t.Fatalf("ls with --token: %v\n%s", err, out)
	}
	if out, err := s.cli([]string{"TANDEM_TOKEN=" + e2eToken}, "--admin", admin, "cost"); err != nil {
		t.Errorf("cost with TANDEM_TOKEN: %v\n%s", err, out)
	}
	if out, err := s.cli([]string{"TANDEM_TOKEN=" + e2eToken}, "--admin", admin, "delete", "viacli"); err != nil {
		t.Errorf("delete with TANDEM_TOKEN: %v\n%s", err, out)
	}

	// The instance's environment has neither variable.
	env, _ := os.ReadFile(envFile)
	if bytes.Contains(env, []byte(e2eToken)) {
		t.Errorf("an instance inherited the token:\n%s", env)
	}
	s.stop(syscall.SIGTERM)
	if strings.Contains(s.log.String(), e2eToken) {
		t.Errorf("the log shows the token:\n%s", s.log)
	}
	assertNotInTree(t, s.dataDir, e2eToken)
	raw, _ := os.ReadFile(filepath.Join(s.dataDir, "audit.log"))
	if !strings.Contains(string(raw), `"auth":"token"`) || !strings.Contains(string(raw), `"auth":"none"`) {
		t.Errorf("audit log without the token's and the refused writes:\n%s", raw)
	}
}

// TLS on both listeners, with a certificate the test makes: the CLI trusts
// it with --ca-cert, deploys through the control API and invokes through
// the gateway (https because /v1/info says so).
func TestSecurity_TLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, ca := selfSignedFiles(t, dir)
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, e2eToken+"\n")
	os.Chmod(tokenFile, 0o600)
	s, err := newServer(t, nil, "--tls-cert", cert, "--tls-key", key, "--admin-token-file", tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"TANDEM_TOKEN=" + e2eToken, "TANDEM_CA_CERT=" + ca}
	f := filepath.Join(dir, "m.yaml")
	writeFile(t, f, fakeManifest(t, "tls", "dedicated", nil, "min: 1\nmax: 1", "startup: 20s"))
	if out, err := s.cli(env, "--admin", s.admin, "deploy", "-f", f); err != nil {
		t.Fatalf("deploy over TLS: %v\n%s", err, out)
	}
	out, err := s.cli(env, "--admin", s.admin, "invoke", "tls", "echo", "-d", `{"x":1}`)
	if err != nil || !strings.Contains(out, `{\"x\":1}`) {
		t.Fatalf("invoke over TLS: %v\n%s", err, out)
	}
	// https:// in --admin works as well as --ca-cert's implied https.
	if out, err := s.cli(env, "--admin", "https://"+s.admin, "ls"); err != nil || !strings.Contains(out, "tls") {
		t.Fatalf("ls with https://: %v\n%s", err, out)
	}
	// Without the CA, the client refuses the certificate.
	if out, err := s.cli([]string{"TANDEM_TOKEN=" + e2eToken}, "--admin", "https://"+s.admin, "ls"); err == nil {
		t.Errorf("ls trusted an unknown certificate:\n%s", out)
	}
	// Plain HTTP is not served on either listener.
	for _, addr := range []string{s.admin, s.gateway} {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Errorf("%s answered plain HTTP with %d", addr, resp.StatusCode)
			}
		}
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within 30s", path)
		}
	}
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

// selfSignedFiles writes a self-signed certificate for 127.0.0.1, ::1 and
// localhost; the certificate is its own CA.
func selfSignedFiles(t *testing.T, dir string) (certFile, keyFile, caFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "tandem e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})))
	return certFile, keyFile, certFile
}
