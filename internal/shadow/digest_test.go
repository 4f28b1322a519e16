package shadow

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

func TestDigest_Write(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 63, 64, 65, 4096, 1 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		d := NewDigest()
		for rest := data; len(rest) > 0; {
			n := min(len(rest), rng.IntN(5000))
			if n, err := d.Write(rest[:n]); err != nil || n < 0 {
				t.Fatalf("Write: %d, %v", n, err)
			}
			rest = rest[n:]
			if rng.IntN(10) == 0 {
				d.Sum() // must not disturb the state
			}
		}
		if got, want := d.Sum(), sha256.Sum256(data); got != want {
			t.Errorf("size %d: Sum = %x, want %x", size, got, want)
		}
	}
}

func TestDigest_NoAllocs(t *testing.T) {
	d := NewDigest()
	p := make([]byte, 1500)
	if n := testing.AllocsPerRun(100, func() { d.Write(p) }); n != 0 {
		t.Errorf("Write allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = d.Sum() }); n != 0 {
		t.Errorf("Sum allocates %v times", n)
	}
}
