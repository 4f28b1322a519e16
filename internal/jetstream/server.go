// Package jetstream runs an embedded NATS server with JetStream on, the
// shared, durable queue that several tandem replicas use for async jobs
// (docs/async.md). `tandem jetstream` serves it in a cluster from tandem's
// own image; tests run it in-process.
package jetstream

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config describes an embedded server.
type Config struct {
	// Listen is host:port for NATS clients ("127.0.0.1:0" picks a port).
	Listen string
	// StoreDir keeps the streams on disk; empty means a fresh temporary
	// folder is refused: durability is the point.
	StoreDir string
	// Token is the credential every client must present. Empty is only
	// allowed on a loopback address.
	Token string
	// MaxStore bounds the file store (bytes); 0 means 1 GiB.
	MaxStore int64
	Logger   *slog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// Start starts the server and waits until it accepts clients.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("jetstream: a store folder is required (--store-dir)")
	}
	host, portText, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("jetstream: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("jetstream: listen address %q: bad port", cfg.Listen)
	}
	if cfg.Token == "" && !isLoopback(host) {
		return nil, fmt.Errorf("jetstream: listening on %s needs a token (--token-file): clients could otherwise read and add every job", cfg.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("jetstream: store folder: %w", err)
	}
	max := cfg.MaxStore
	if max <= 0 {
		max = 1 << 30
	}
	opts := &server.Options{
		ServerName:         "tandem-jetstream",
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		JetStreamMaxStore:  max,
		JetStreamMaxMemory: 64 << 20,
		Authorization:      cfg.Token,
		NoSigs:             true,
		MaxPayload:         8 << 20, // a job's request body is at most 6 MiB plus its record
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(logAdapter{cfg.Logger.With("component", "jetstream")}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("jetstream: the server did not accept clients within 30s")
	}
	return &Server{ns: ns}, nil
}

// URL is the address clients connect to (nats://host:port).
func (s *Server) URL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// logAdapter sends the NATS server's log to slog (its debug and trace
// levels are off).
type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a logAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a logAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a logAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a logAdapter) Debugf(format string, v ...any)  {}
func (a logAdapter) Tracef(format string, v ...any)  {}
