package tenant

import (
	"context"
	"net/http"
	"testing"

	"tandem/internal/cost"
	"tandem/internal/gateway"
	"tandem/internal/store"
)

// BenchmarkStage_Admit is the authentication stage's cost per request (the
// issue's target: under 5 us): parse the key, find it, compare digests,
// check the model, take a concurrency slot and a rate token.
func BenchmarkStage_Admit(b *testing.B) {
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	r, err := Open(st, cost.DefaultPrices(), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Create(Tenant{Name: "acme", Models: []string{"a", "m"}, Rate: Rate{N: 1e9, Per: 1e9}, Concurrency: 1 << 20}); err != nil {
		b.Fatal(err)
	}
	_, key, err := r.CreateKey("acme", 0)
	if err != nil {
		b.Fatal(err)
	}
	stage := NewStage(r, nil)
	auth := []string{"Bearer " + key}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A header per request: the stage removes the key it has checked.
		ex := &gateway.Exchange{Model: "m", Header: http.Header{"Authorization": auth}}
		if err := stage.Admit(context.Background(), ex); err != nil {
			b.Fatal(err)
		}
	}
}
