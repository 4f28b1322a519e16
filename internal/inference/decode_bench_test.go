package inference_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"tandem/internal/inference"
)

func ocrBody() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	img := make([]float32, 3*48*192)
	for i := range img {
		img[i] = (float32(rng.IntN(256))/255 - 0.5) / 0.5
	}
	body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{
		"name": "x", "datatype": "FP32", "shape": []int{1, 3, 48, 192}, "data": img}}})
	return body
}

// BenchmarkDecodeInferRequest decodes one 3x48x192 FP32 image (what an OCR
// client sends).
func BenchmarkDecodeInferRequest(b *testing.B) {
	body := ocrBody()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inference.DecodeInferRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInferRequest_AppendJSON encodes the same image.
func BenchmarkInferRequest_AppendJSON(b *testing.B) {
	req, err := inference.DecodeInferRequest(ocrBody())
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = req.AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}
