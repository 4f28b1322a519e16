package tenant

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A rate that parses prints back to text that parses to the same rate.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"5/s", "100/m", "3/h", "100/10s", "0", "", "1/1ms", "7/24h", "x/s", "5/", "/s", "-1/s", "5/0s", "1e3/s", " 5/s "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			if r != (Rate{}) {
				t.Fatalf("%q: error %v with rate %+v", s, err, r)
			}
			return
		}
		if r.IsZero() {
			if r.Per != 0 {
				t.Fatalf("%q: zero count with period %v", s, r.Per)
			}
			return
		}
		if r.N <= 0 || r.Per < time.Millisecond || r.Per > 24*time.Hour {
			t.Fatalf("%q parsed to %+v, outside the documented range", s, r)
		}
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, r, r.String(), back, err)
		}
		if ps := r.PerSecond(); math.IsNaN(ps) || math.IsInf(ps, 0) || ps <= 0 {
			t.Fatalf("%q: %v per second", s, ps)
		}
	})
}

// A budget that parses is a finite, non-negative amount, and its decimal
// text parses to the same amount.
func FuzzParseBudget(f *testing.F) {
	for _, s := range []string{"5", "0.0001", "$12.50", "", "0", "-1", "NaN", "Inf", "1e12", "1e13", "$", "0x10", "$$5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseBudget(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(s, "\n") {
				t.Fatalf("%q: multi-line error %q", s, err)
			}
			return
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 1e12 {
			t.Fatalf("%q parsed to %v", s, v)
		}
		back, err := ParseBudget("$" + strconvFloat(v))
		if err != nil || back != v {
			t.Fatalf("%q -> %v -> %v, %v", s, v, back, err)
		}
	})
}

// A period that parses is at least a second, and its duration text parses
// to the same period.
func FuzzParsePeriod(f *testing.F) {
	for _, s := range []string{"30d", "12h", "1d12h", "90m", "0d", "d", "1d1d", "36500d", "36501d", "1s", "999ms", "-1h", "1d-1h", "5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParsePeriod(s)
		if err != nil {
			return
		}
		if d < time.Second {
			t.Fatalf("%q parsed to %v, under a second", s, d)
		}
		back, err := ParsePeriod(d.String())
		if err != nil || back != d {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, d, d.String(), back, err)
		}
	})
}

// ParseKey takes exactly the keys newKey makes: it never panics, a key
// that parses is rebuilt from its parts byte for byte, and its error never
// repeats the input.
func FuzzParseKey(f *testing.F) {
	_, _, k := newKey()
	// The last character carries two spare bits: flipping one must not
	// make a second text of the same key.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	spare := k[:len(k)-1] + string(alphabet[strings.IndexByte(alphabet, k[len(k)-1])^1])
	f.Add(spare)
	for _, s := range []string{k, k[:len(k)-1], k + "A", strings.ToUpper(k), "tdm_", "tdm_0123456789abcdef_", "", "Bearer " + k, k[:20] + "=" + k[21:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := ParseKey(s)
		if err != nil {
			if err != ErrMalformedKey || (len(s) > 3 && strings.Contains(err.Error(), s)) {
				t.Fatalf("%q: error %v", s, err)
			}
			return
		}
		if len(id) != idLen || len(secret) != secretBytes {
			t.Fatalf("%q: id %q, %d secret bytes", s, id, len(secret))
		}
		if rebuilt := keyPrefix + id + "_" + encodeSecret(secret); rebuilt != s {
			t.Fatalf("%q parsed, but its parts make %q: two texts for one key", s, rebuilt)
		}
	})
}

func strconvFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func encodeSecret(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
