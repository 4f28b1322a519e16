package inference_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"tandem/internal/inference"
)

// TestDecodeInferRequest_numbers checks the decoder's own number parsing
// (with its fast paths) against strconv, on many numbers of every form.
func TestDecodeInferRequest_numbers(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var toks []string
	for range 20000 {
		var s string
		switch rng.IntN(8) {
		case 6:
			s = fmt.Sprintf("0.%09d", rng.IntN(1e9))
		case 7:
			s = strconv.FormatFloat(float64(math.Float32frombits(rng.Uint32())), 'g', -1, 32)
		case 0:
			s = strconv.FormatFloat(rng.NormFloat64()*math.Pow(10, float64(rng.IntN(20)-10)), 'g', -1, 32)
		case 1:
			s = strconv.FormatFloat(rng.NormFloat64()*math.Pow(10, float64(rng.IntN(40)-20)), 'g', -1, 64)
		case 2:
			s = fmt.Sprintf("%d.%0*d", rng.IntN(1000), rng.IntN(12)+1, rng.Int64N(1e12))
		case 3:
			s = fmt.Sprintf("%de%d", rng.Int64N(1<<40), rng.IntN(50)-25)
		case 4:
			s = strconv.FormatInt(rng.Int64()>>rng.IntN(63), 10)
		default:
			s = fmt.Sprintf("%d%s", rng.IntN(10), "."+strconv.Itoa(rng.IntN(100000000)))
		}
		if rng.IntN(2) == 0 && s[0] != '-' {
			s = "-" + s
		}
		if _, err := strconv.ParseFloat(s, 64); err != nil || strings.ContainsAny(s, "NIaf") {
			continue // not a JSON number (NaN, Inf)
		}
		toks = append(toks, s)
	}
	toks = append(toks, "0", "-0", "0.1", "1e10", "16777217", "9007199254740993", "0.000001", "123456789012345678901234567890", "1e-400")

	for _, dt := range []inference.Datatype{inference.FP32, inference.FP64, inference.Int64} {
		for _, tok := range toks {
			body := `{"inputs":[{"name":"x","datatype":"` + string(dt) + `","shape":[1],"data":[` + tok + `]}]}`
			req, err := inference.DecodeInferRequest([]byte(body))
			switch dt {
			case inference.FP32:
				want, werr := strconv.ParseFloat(tok, 32)
				if (err != nil) != (werr != nil) {
					t.Fatalf("FP32 %s: err %v, strconv %v", tok, err, werr)
				}
				if err == nil {
					got, _ := inference.Values[float32](&req.Inputs[0])
					if math.Float32bits(got[0]) != math.Float32bits(float32(want)) {
						t.Fatalf("FP32 %s: got %v, strconv %v", tok, got[0], float32(want))
					}
				}
			case inference.FP64:
				want, werr := strconv.ParseFloat(tok, 64)
				if (err != nil) != (werr != nil) {
					t.Fatalf("FP64 %s: err %v, strconv %v", tok, err, werr)
				}
				if err == nil {
					got, _ := inference.Values[float64](&req.Inputs[0])
					if math.Float64bits(got[0]) != math.Float64bits(want) {
						t.Fatalf("FP64 %s: got %v, strconv %v", tok, got[0], want)
					}
				}
			case inference.Int64:
				want, werr := strconv.ParseInt(tok, 10, 64)
				if werr == nil {
					if err != nil {
						t.Fatalf("INT64 %s: %v", tok, err)
					}
					got, _ := inference.Values[int64](&req.Inputs[0])
					if got[0] != want {
						t.Fatalf("INT64 %s: got %d, want %d", tok, got[0], want)
					}
				}
			}
		}
	}
}

// TestDecodeInferRequest_keyOrder decodes tensors whose data comes before
// their datatype (clients that sort keys), including a misleading datatype
// further on.
func TestDecodeInferRequest_keyOrder(t *testing.T) {
	body := `{"inputs":[
		{"data":[1,2],"name":"a","shape":[2],"datatype":"INT64"},
		{"data":[true,false],"name":"b","shape":[2],"datatype":"BOOL"},
		{"name":"c","data":[1.5],"shape":[1],"parameters":{"note":"\"datatype\": \"BOOL\""},"datatype":"FP32"}]}`
	req, err := inference.DecodeInferRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := inference.Values[int64](&req.Inputs[0])
	b, _ := inference.Values[bool](&req.Inputs[1])
	c, _ := inference.Values[float32](&req.Inputs[2])
	if fmt.Sprint(a, b, c) != "[1 2] [true false] [1.5]" {
		t.Errorf("got %v %v %v", a, b, c)
	}
}
