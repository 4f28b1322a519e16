package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"tandem/internal/api"
)

// MinAdminToken is the shortest admin token accepted, in bytes.
const MinAdminToken = 16

// AdminTokenEnv is the environment variable `tandem serve` reads the
// control API's token from when --admin-token-file is not given.
const AdminTokenEnv = "TANDEM_ADMIN_TOKEN"

// TokenFromEnv returns $TANDEM_ADMIN_TOKEN and removes it, and the CLI's
// $TANDEM_TOKEN, from the environment: instances started by the process
// backend inherit tandem's environment, and must not see either.
func TokenFromEnv() string {
	tok := os.Getenv(AdminTokenEnv)
	os.Unsetenv(AdminTokenEnv)
	os.Unsetenv("TANDEM_TOKEN")
	return tok
}

// security is what Run needs from the security settings: the admin token
// ("" = none) and the listeners' TLS configuration (nil = plain TCP).
type security struct {
	token string
	tls   *tls.Config
}

// openSecurity reads the admin token and the TLS key pair, and refuses a
// control API off loopback without a token. It runs before anything else
// starts.
func openSecurity(cfg Config, log *slog.Logger) (security, error) {
	var sec security
	tok := cfg.AdminToken
	if cfg.AdminTokenFile != "" {
		if tok != "" {
			return sec, errors.New("--admin-token-file and $" + AdminTokenEnv + " are both set: use one")
		}
		var err error
		if tok, err = readTokenFile(cfg.AdminTokenFile, log); err != nil {
			return sec, err
		}
	}
	if tok != "" {
		if err := checkToken(tok); err != nil {
			return sec, err
		}
	}
	sec.token = tok
	if tok == "" {
		if err := checkAdminListen(cfg.AdminListen); err != nil {
			return sec, err
		}
	}
	switch {
	case cfg.TLSCert != "" && cfg.TLSKey != "":
		pair, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return sec, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		sec.tls = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		return sec, errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	return sec, nil
}

// listener makes l serve TLS when TLS is configured, offering protos by
// ALPN: HTTP/1.1 for the HTTP listeners (the gateway's forwarder is proven
// on HTTP/1.1: 1xx, trailers, upgrades), h2 for gRPC.
func (s security) listener(l net.Listener, protos ...string) net.Listener {
	if s.tls == nil || l == nil {
		return l
	}
	c := s.tls.Clone()
	c.NextProtos = protos
	return tls.NewListener(l, c)
}

// adminAuth names how the control API checks its callers, for the log.
func (s security) adminAuth() string {
	if s.token != "" {
		return "token"
	}
	return "loopback"
}

func readTokenFile(path string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// The error names the file, never its content.
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o004 != 0 {
		log.Warn("the admin token file is readable by every user of this machine (chmod 600 it)", "file", path)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--admin-token-file %s is empty", path)
	}
	return tok, nil
}

// checkToken refuses tokens too short to resist guessing, and ones that
// cannot travel in an Authorization header.
func checkToken(tok string) error {
	const how = " (make one with: head -c 32 /dev/urandom | base64)"
	if len(tok) < MinAdminToken {
		return fmt.Errorf("the admin token is %d bytes long; use at least %d%s", len(tok), MinAdminToken, how)
	}
	for _, c := range tok {
		if c <= ' ' || c >= 0x7f {
			return errors.New("the admin token may hold printable ASCII only, without spaces" + how)
		}
	}
	return nil
}

// checkAdminListen refuses a control API without a token anywhere but on
// loopback: whoever reaches it can run programs as tandem's user.
func checkAdminListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err == nil && host != "" && api.IsLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("--admin-listen %s is not a loopback address, and the control API has no token: "+
		"whoever reaches it can run any program as this user. Give it a token with --admin-token-file FILE "+
		"(or $%s), for example: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE; clients then pass "+
		"--token or $TANDEM_TOKEN. Or listen on 127.0.0.1. See docs/security.md", addr, AdminTokenEnv)
}

// openAudit opens <dataDir>/audit.log.
func openAudit(dataDir string, stack *stopStack) (*api.Audit, error) {
	a, err := api.OpenAudit(filepath.Join(dataDir, "audit.log"))
	if err != nil {
		return nil, err
	}
	stack.push(func() { a.Close() })
	return a, nil
}
