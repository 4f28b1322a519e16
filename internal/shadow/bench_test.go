package shadow

import (
	"context"
	"crypto/sha256"
	"io"
	"runtime"
	"testing"
)

// benchBody is a small answer whose Close frees a slot of the benchmark's
// window, so the producer never outruns the workers and nothing is dropped.
type benchBody struct {
	rest []byte
	sem  chan struct{}
}

func (b *benchBody) Read(p []byte) (int, error) {
	if len(b.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

func (b *benchBody) Close() error { <-b.sem; return nil }

// BenchmarkSubmitPair measures one mirrored copy end to end, without the
// network: Submit, a worker's Send (one allocation, the body, which is the
// gateway's), hashing a 512-byte answer, and the verdict.
func BenchmarkSubmitPair(b *testing.B) {
	answer := make([]byte, 512)
	sum := sha256.Sum256(answer)
	m := New(Config{}, nil)
	defer m.Close()
	sem := make(chan struct{}, DefaultQueue/2)
	send := func(context.Context) (int, io.ReadCloser, error) {
		return 200, &benchBody{rest: answer, sem: sem}, nil
	}
	b.ReportAllocs()
	for b.Loop() {
		sem <- struct{}{}
		p := m.Submit(Copy{Model: "m", Revision: "r2", Timeout: DefaultTimeout, Send: send})
		if p == nil {
			b.Fatal("dropped")
		}
		p.Primary(200, sum)
	}
	for range cap(sem) { // wait for the last copies
		sem <- struct{}{}
	}
	b.StopTimer()
	if s := m.Stats("m")[0]; s.Mismatched+s.Errors+s.Dropped != 0 {
		b.Fatalf("stats = %+v", s)
	}
}

// BenchmarkSubmitDrop is the cost of a copy dropped on a full queue.
func BenchmarkSubmitDrop(b *testing.B) {
	m := New(Config{Workers: 1, Queue: 1}, nil)
	block := make(chan struct{})
	hang := func(ctx context.Context) (int, io.ReadCloser, error) { <-block; return 0, nil, ctx.Err() }
	m.Submit(Copy{Model: "m", Revision: "r2", Send: hang})
	for m.Stats("m")[0].Sent == 0 { // the worker holds the first copy
		runtime.Gosched()
	}
	m.Submit(Copy{Model: "m", Revision: "r2", Send: hang}) // and the queue the second
	b.ReportAllocs()
	for b.Loop() {
		if m.Submit(Copy{Model: "m", Revision: "r2", Send: hang}) != nil {
			b.Fatal("queued")
		}
	}
	b.StopTimer()
	close(block)
	m.Close()
}
