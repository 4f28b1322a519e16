package tenant

import (
	"context"
	"net/http"
	"strconv"
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

// BenchmarkStage_WrongKey is the cost of refusing a wrong key by how much
// of its secret is right: the secret is hashed and the digests compared in
// constant time, so the figures should not rise with the matched part.
func BenchmarkStage_WrongKey(b *testing.B) {
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	r, err := Open(st, cost.DefaultPrices(), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Create(Tenant{Name: "acme"}); err != nil {
		b.Fatal(err)
	}
	_, key, err := r.CreateKey("acme", 0)
	if err != nil {
		b.Fatal(err)
	}
	stage := NewStage(r, nil)
	// A wrong key that keeps the first n characters of the secret; the last
	// one is changed to another base64url character of the same bit pattern
	// class so the key still parses.
	secretAt := len(keyPrefix) + idLen + 1
	for _, matched := range []int{0, 21, 42} {
		wrong := []byte(key)
		for i := secretAt + matched; i < len(wrong)-1; i++ {
			wrong[i] = flip(wrong[i])
		}
		wrong[len(wrong)-2] = flip(key[len(key)-2]) // always differs somewhere
		b.Run("matched="+strconv.Itoa(matched), func(b *testing.B) {
			auth := []string{"Bearer " + string(wrong)}
			for i := 0; i < b.N; i++ {
				ex := &gateway.Exchange{Model: "m", Header: http.Header{"Authorization": auth}}
				if err := stage.Admit(context.Background(), ex); err == nil {
					b.Fatal("a wrong key was admitted")
				}
			}
		})
	}
}

func flip(c byte) byte {
	if c == 'A' {
		return 'B'
	}
	return 'A'
}
