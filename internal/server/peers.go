package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"tandem/internal/backend"
	"tandem/internal/controller"
	"tandem/internal/peerstats"
)

var _ controller.PeerStats = peerstats.Stats{}

// peerAddr returns where other tandem processes reach this one's control
// API: flag when given; in a pod, $POD_IP (the downward API) with the
// admin listener's port; else the admin listener's address unless it
// listens on every address (0.0.0.0 names no one place to reach).
func peerAddr(flag string, admin net.Addr) string {
	if flag != "" {
		return flag
	}
	ta, ok := admin.(*net.TCPAddr)
	if !ok {
		return ""
	}
	if ip := os.Getenv("POD_IP"); ip != "" {
		return net.JoinHostPort(ip, strconv.Itoa(ta.Port))
	}
	if ta.IP.IsUnspecified() {
		return ""
	}
	return ta.String()
}

// sharedLeader is a replica backend shared by several tandem processes
// that publish their addresses (kubernetes).
type sharedLeader interface {
	backend.LeaderLocator
	Identity() string
}

// peerStatsFor is what Run keeps of the peer stats: nil when this process
// shares no replica platform.
type peerStatsFor struct {
	peerstats.Stats
}

// controller returns the stats as the controller takes them (nil: none).
func (p *peerStatsFor) controller() controller.PeerStats {
	if p == nil {
		return nil
	}
	return p.Stats
}

// openPeerStats starts reporting this process's traffic to the leader of
// the first replica backend shared with other tandem processes, and
// returns the collector the leader serves; nil when there is none.
func openPeerStats(ctx context.Context, replicas map[string]backend.ReplicaBackend, sec security, tick time.Duration, log *slog.Logger, stack *stopStack) *peerStatsFor {
	var shared sharedLeader
	for _, rb := range replicas {
		if s, ok := rb.(sharedLeader); ok {
			shared = s
			break
		}
	}
	if shared == nil {
		return nil
	}
	log = log.With("component", "peerstats")
	rc := peerstats.ReporterConfig{Identity: shared.Identity(), Leader: shared, Token: sec.token, Interval: tick, Logger: log}
	if sec.tls != nil {
		rc.Scheme = "https"
		rc.Client = &http.Client{Timeout: rc.Interval, Transport: &http.Transport{TLSClientConfig: pinnedTLS(sec.tls)}}
	}
	r := peerstats.NewReporter(rc)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	stack.push(func() { cancel(); <-done })
	c := peerstats.NewCollector(shared.Identity(), peerstats.ExpiryReports*rc.Interval, nil, log)
	return &peerStatsFor{peerstats.Stats{Reporter: r, Collector: c}}
}

// pinnedTLS trusts exactly the certificate this process serves: the tandem
// replicas of one cluster mount the same key pair, whose names need not
// include the pods' addresses that reports are sent to.
func pinnedTLS(own *tls.Config) *tls.Config {
	var leaf []byte
	if len(own.Certificates) > 0 && len(own.Certificates[0].Certificate) > 0 {
		leaf = own.Certificates[0].Certificate[0]
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is checked below, against the one certificate trusted.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if leaf == nil || len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf) {
				return errors.New("peer stats: the leader's certificate is not the one this tandem serves")
			}
			return nil
		},
	}
}
