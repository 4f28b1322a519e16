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
	"tandem/internal/tenant"
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
func openPeerStats(ctx context.Context, replicas map[string]backend.ReplicaBackend, tenants *tenant.Registry, sec security, tick time.Duration, log *slog.Logger, stack *stopStack) *peerStatsFor {
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
	if tick <= 0 {
		tick = peerstats.DefaultInterval
	}
	c := peerstats.NewCollector(shared.Identity(), peerstats.ExpiryReports*tick, nil, log)
	rc := peerstats.ReporterConfig{Identity: shared.Identity(), Leader: shared, Token: sec.token, Interval: tick, Logger: log,
		Ledger: ledger{tenants}, Local: c}
	if sec.tls != nil {
		rc.Scheme = "https"
		rc.Client = &http.Client{Timeout: rc.Interval, Transport: &http.Transport{TLSClientConfig: pinnedTLS(sec.tls)}}
	}
	r := peerstats.NewReporter(rc)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	stack.push(func() { cancel(); <-done })
	return &peerStatsFor{peerstats.Stats{Reporter: r, Collector: c}}
}

// ledger is the tenant registry as the peer stats see it: the tenants'
// spend goes into each report, and the leader's reply (live processes,
// the others' spend) splits the tenants' limits.
type ledger struct{ r *tenant.Registry }

var _ peerstats.Ledger = ledger{}

func (l ledger) Spend(now time.Time) []peerstats.Spend {
	var out []peerstats.Spend
	for _, s := range l.r.Spend(now) {
		ps := peerstats.Spend{Tenant: s.Tenant, Period: s.Period.UnixNano(), USD: s.USD}
		if !s.Until.IsZero() {
			ps.Until = s.Until.UnixNano()
		}
		out = append(out, ps)
	}
	return out
}

func (l ledger) Cluster(rep peerstats.Reply) {
	others := make([]tenant.PeriodSpend, 0, len(rep.Spend))
	for _, s := range rep.Spend {
		others = append(others, tenant.PeriodSpend{Tenant: s.Tenant, Period: time.Unix(0, s.Period), USD: s.USD})
	}
	l.r.Cluster(rep.Replicas, others)
}

// shareTenants makes the tenant catalog on the first replica backend that
// keeps one (kubernetes: the Secret tandem-tenants) the source of truth of
// tenants and keys, and follows it every interval.
func shareTenants(replicas map[string]backend.ReplicaBackend, tenants *tenant.Registry, every time.Duration, log *slog.Logger, stack *stopStack) {
	for _, rb := range replicas {
		cat, ok := rb.(tenant.Catalog)
		if !ok {
			continue
		}
		tenants.Share(cat)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); tenants.SyncCatalog(ctx, every) }()
		stack.push(func() { cancel(); <-done })
		log.Info("tenants and keys are shared through the cluster", "backend", rb.Name(), "interval", every)
		return
	}
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
