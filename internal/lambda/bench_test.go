package lambda

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkFunction_Warm is one event through a ready instance of the
// aws-lambda-go function: ingress, Runtime API (next, response) and the
// answer, raw and as an API Gateway v1 event. Allocations are tandem's
// side (and the client's), not the function's, which is its own process.
func BenchmarkFunction_Warm(b *testing.B) {
	w := newWrapped(b, b.TempDir())
	defer w.Close()
	spec := fnSpec(b, "fn-bench", "")
	inst, err := w.Start(context.Background(), spec)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop(context.Background(), spec.ID, 0)
	waitReady(b, inst.Addr)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	for _, tc := range []struct {
		name, path string
		h          http.Header
	}{
		{"raw", "/", http.Header{InvokeHeader: {InvokeToken()}}},
		{"apigw-v1", "/echo?a=1", http.Header{"Content-Type": {"application/json"}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			body := []byte(`{"op":"sum","numbers":[1,2,3]}`)
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", "http://"+inst.Addr+tc.path, bytes.NewReader(body))
				req.Header = tc.h.Clone()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// BenchmarkFunction_ColdStart is Start to ready (the function's first GET
// /next) of the aws-lambda-go function, then its stop.
func BenchmarkFunction_ColdStart(b *testing.B) {
	w := newWrapped(b, b.TempDir())
	defer w.Close()
	var ready time.Duration
	i := 0
	for b.Loop() {
		spec := fnSpec(b, fmt.Sprintf("fn-cold-%d", i), "")
		i++
		t0 := time.Now()
		inst, err := w.Start(context.Background(), spec)
		if err != nil {
			b.Fatal(err)
		}
		waitReady(b, inst.Addr)
		ready += time.Since(t0)
		w.Stop(context.Background(), spec.ID, time.Second)
	}
	b.ReportMetric(float64(ready.Microseconds())/float64(b.N)/1000, "ms-to-ready")
}
