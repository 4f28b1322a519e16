package tenant

import (
	"net/http"
	"testing"
	"time"

	"tandem/internal/cost"
	"tandem/internal/problem"
	"tandem/internal/store"
)

func TestStage_View(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := Open(st, cost.DefaultPrices(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A rate of one request an hour: View must not spend it.
	if _, err := r.Create(Tenant{Name: "acme", Models: []string{"chat"}, Rate: Rate{N: 1, Per: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(Tenant{Name: "all"}); err != nil {
		t.Fatal(err)
	}
	_, acme, err := r.CreateKey("acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, all, err := r.CreateKey("all", 0)
	if err != nil {
		t.Fatal(err)
	}
	stage := NewStage(r, nil)
	tests := []struct {
		name   string
		h      http.Header
		model  string
		status int // 0: may see
	}{
		{"no key", http.Header{}, "chat", 401},
		{"unknown key", http.Header{"Authorization": {"Bearer tdm_nope_nope"}}, "chat", 401},
		{"own model", http.Header{"Authorization": {"Bearer " + acme}}, "chat", 0},
		{"own model again", http.Header{"X-Api-Key": {acme}}, "chat", 0},
		{"other model", http.Header{"Authorization": {"Bearer " + acme}}, "embed", 403},
		{"every model", http.Header{"Authorization": {"Bearer " + all}}, "embed", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := stage.View(tt.h, tt.model)
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("View = %v, want nil", err)
				}
				return
			}
			if pe := problem.From(err); err == nil || pe.Status != tt.status {
				t.Fatalf("View = %v, want %d", err, tt.status)
			}
		})
	}
}
