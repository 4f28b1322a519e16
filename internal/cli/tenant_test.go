package cli

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"tandem/internal/api"
	"tandem/internal/cost"
	"tandem/internal/metrics"
	"tandem/internal/store"
	"tandem/internal/tenant"
)

// adminServer is a control API with the tenants routes over a fresh store.
func adminServer(t *testing.T) string {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg, err := tenant.Open(st, cost.DefaultPrices(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := api.NewServer(nil, metrics.New(), api.Info{}, slog.New(slog.DiscardHandler))
	s.MountTenants(reg)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return hs.URL
}

func run(t *testing.T, admin string, args ...string) (string, error) {
	t.Helper()
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--admin", admin}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func mustRun(t *testing.T, admin string, args ...string) string {
	t.Helper()
	out, err := run(t, admin, args...)
	if err != nil {
		t.Fatalf("tandem %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestTenantCommands(t *testing.T) {
	admin := adminServer(t)
	mustRun(t, admin, "tenant", "create", "acme", "--models", "a,b", "--rate", "5/s", "--concurrency", "2",
		"--budget", "0.01", "--budget-period", "30d")
	out := mustRun(t, admin, "tenant", "status", "acme")
	for _, want := range []string{"acme", "a,b", "5/s (a burst of 5", "Concurrency: 2", "$0.0100 per 30d", "Keys:        0"} {
		if !strings.Contains(out, want) {
			t.Errorf("tenant status lacks %q:\n%s", want, out)
		}
	}
	if _, err := run(t, admin, "tenant", "create", "acme"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second create: %v", err)
	}
	if _, err := run(t, admin, "tenant", "create", "x", "--rate", "fast"); err == nil || !strings.Contains(err.Error(), "rate") {
		t.Errorf("bad rate: %v", err)
	}

	// update changes only the flags given; "" clears.
	mustRun(t, admin, "tenant", "update", "acme", "--rate", "")
	out = mustRun(t, admin, "tenant", "status", "acme")
	if !strings.Contains(out, "Rate:        no limit") || !strings.Contains(out, "a,b") || !strings.Contains(out, "Concurrency: 2") {
		t.Errorf("after update --rate '':\n%s", out)
	}
	if _, err := run(t, admin, "tenant", "update", "acme"); err == nil {
		t.Error("update without a flag succeeded")
	}

	// The key is the last line, and nowhere else.
	out = mustRun(t, admin, "key", "create", "--tenant", "acme", "--expires", "90d")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key := lines[len(lines)-1]
	id, _, err := tenant.ParseKey(key)
	if err != nil {
		t.Fatalf("last line %q is not a key: %v\n%s", key, err, out)
	}
	if !strings.Contains(lines[0], id) {
		t.Errorf("first line %q does not name the key's id %s", lines[0], id)
	}
	for _, args := range [][]string{{"key", "ls"}, {"key", "ls", "--tenant", "acme"}, {"key", "ls", "--json"},
		{"tenant", "ls"}, {"tenant", "ls", "--json"}, {"tenant", "status", "acme", "--json"}} {
		out := mustRun(t, admin, args...)
		if strings.Contains(out, key) || strings.Contains(out, key[len(key)-20:]) {
			t.Errorf("tandem %s shows the key:\n%s", strings.Join(args, " "), out)
		}
		if args[0] == "key" && !strings.Contains(out, id) {
			t.Errorf("tandem %s does not list key %s:\n%s", strings.Join(args, " "), id, out)
		}
	}

	out = mustRun(t, admin, "cost", "--tenant", "acme")
	for _, want := range []string{"Tenant:      acme", "Requests:    0", "Spent:       $0", "This period: $0 of $0.0100 per 30d"} {
		if !strings.Contains(out, want) {
			t.Errorf("cost --tenant lacks %q:\n%s", want, out)
		}
	}

	mustRun(t, admin, "key", "revoke", id)
	if out := mustRun(t, admin, "key", "ls"); strings.Contains(out, id) {
		t.Errorf("revoked key listed:\n%s", out)
	}
	if _, err := run(t, admin, "key", "revoke", id); err == nil {
		t.Error("revoking twice succeeded")
	}
	mustRun(t, admin, "tenant", "delete", "acme")
	if out := mustRun(t, admin, "tenant", "ls"); strings.Contains(out, "acme") {
		t.Errorf("deleted tenant listed:\n%s", out)
	}
}
