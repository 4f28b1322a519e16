package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"
)

// AuditEntry is one line of the audit log: a control-plane write, who made
// it, and how it was answered. It never holds a token or a manifest.
type AuditEntry struct {
	Time time.Time `json:"time"`
	// Remote is the client's address as the listener saw it.
	Remote string `json:"remote"`
	// Auth is who made the request: AuthToken, AuthLoopback, AuthNone or
	// AuthInvalid.
	Auth   string `json:"auth"`
	Method string `json:"method"`
	Path   string `json:"path"`
	// Route is the route that answered ("DELETE /v1/deployments/{name}"),
	// empty when the request was refused before routing or matched none.
	Route string `json:"route,omitempty"`
	// Name is the deployment (or other resource) the write names, when
	// known: the route's {name}, or the deployed manifest's name.
	Name   string `json:"name,omitempty"`
	Status int    `json:"status"`
}

// Audit appends AuditEntry lines to a file (JSON lines, mode 0600). It is
// safe for concurrent use. It does not rotate the file.
type Audit struct {
	mu sync.Mutex
	f  *os.File
}

// OpenAudit opens (creating or appending to) the audit log at path, and
// makes it readable by its owner only.
func OpenAudit(path string) (*Audit, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return &Audit{f: f}, nil
}

// Close closes the file; later records are dropped.
func (a *Audit) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

// Write appends e as one line.
func (a *Audit) Write(e AuditEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return os.ErrClosed
	}
	_, err = a.f.Write(b)
	return err
}

// record writes the entry for a write request once it is answered. The
// ServeMux has set r.Pattern and the path values on r by then.
func (a *Audit) record(r *http.Request, rec *auditRecord, status int, log *slog.Logger) {
	name := r.PathValue("name")
	if rec.name != "" {
		name = rec.name
	}
	e := AuditEntry{Time: time.Now().UTC(), Remote: r.RemoteAddr, Auth: rec.auth, Method: r.Method,
		Path: r.URL.Path, Route: r.Pattern, Name: name, Status: status}
	if err := a.Write(e); err != nil {
		log.Error("audit log", "err", err)
	}
}

// auditRecord is what the handlers add to a write's audit entry.
type auditRecord struct {
	auth string
	name string
}

type auditKey struct{}

func withAuditRecord(ctx context.Context, rec *auditRecord) context.Context {
	return context.WithValue(ctx, auditKey{}, rec)
}

// AuditName names the resource a write acts on in its audit entry, when
// the route does not ({name}): a deploy names its manifest's name. It does
// nothing when the request is not audited.
func AuditName(r *http.Request, name string) {
	if rec, ok := r.Context().Value(auditKey{}).(*auditRecord); ok {
		rec.name = name
	}
}
