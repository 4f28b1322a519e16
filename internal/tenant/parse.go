package tenant

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Rate is a request rate: N requests per Per. The zero Rate is no limit.
type Rate struct {
	N   int           `json:"n"`
	Per time.Duration `json:"per"`
}

// IsZero reports whether r sets no limit.
func (r Rate) IsZero() bool { return r.N == 0 }

func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	switch r.Per {
	case time.Second:
		return fmt.Sprintf("%d/s", r.N)
	case time.Minute:
		return fmt.Sprintf("%d/m", r.N)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.N)
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// PerSecond is the rate in requests per second.
func (r Rate) PerSecond() float64 { return float64(r.N) / r.Per.Seconds() }

// ParseRate reads "N/s", "N/m", "N/h" or "N/DURATION" (such as 100/10s).
// "" and "0" are no limit.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return Rate{}, nil
	}
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("invalid rate %q: use N/s, N/m or N/h (such as 5/s)", s)
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 0 || count > 1e9 {
		return Rate{}, fmt.Errorf("invalid rate %q: %q is not a count from 0 to 1000000000", s, n)
	}
	var d time.Duration
	switch per {
	case "s", "sec", "second":
		d = time.Second
	case "m", "min", "minute":
		d = time.Minute
	case "h", "hour":
		d = time.Hour
	default:
		if d, err = time.ParseDuration(per); err != nil || d < time.Millisecond || d > 24*time.Hour {
			return Rate{}, fmt.Errorf("invalid rate %q: the period %q is not s, m, h or a duration from 1ms to 24h", s, per)
		}
	}
	if count == 0 {
		return Rate{}, nil
	}
	return Rate{N: count, Per: d}, nil
}

// ParseBudget reads an amount of US dollars: "5", "0.0001", "$12.50".
// "" and "0" are no budget.
func ParseBudget(s string) (float64, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "$")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 1e12 {
		return 0, fmt.Errorf("invalid budget %q: use an amount of USD such as 25 or 0.50", s)
	}
	return v, nil
}

// ParsePeriod reads a duration that may also count days: "30d", "12h",
// "1d12h". It must be at least a second.
func ParsePeriod(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var total time.Duration
	rest := s
	if i := strings.IndexByte(rest, 'd'); i > 0 {
		days, err := strconv.Atoi(rest[:i])
		if err != nil || days < 0 || days > 36500 {
			return 0, fmt.Errorf("invalid period %q: use a duration such as 30d, 24h or 90m", s)
		}
		total = time.Duration(days) * 24 * time.Hour
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("invalid period %q: use a duration such as 30d, 24h or 90m", s)
		}
		total += d
	}
	if total < time.Second {
		return 0, fmt.Errorf("invalid period %q: it must be at least 1s", s)
	}
	return total, nil
}

// Keys look like tdm_<id>_<secret>: the id (16 hex digits) names the key in
// listings and the audit; the secret (32 random bytes, base64url) is shown
// once and stored only as its SHA-256.
const (
	keyPrefix   = "tdm_"
	idLen       = 16
	secretBytes = 32
)

// ErrMalformedKey is a credential that is not a tandem key at all.
var ErrMalformedKey = errors.New("malformed API key")

// ParseKey splits a key into its id and secret. It looks only at the
// key's shape, and its error never repeats the key.
func ParseKey(key string) (id string, secret []byte, err error) {
	rest, ok := strings.CutPrefix(key, keyPrefix)
	if !ok || len(rest) < idLen+2 || rest[idLen] != '_' {
		return "", nil, ErrMalformedKey
	}
	id = rest[:idLen]
	if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
		return "", nil, ErrMalformedKey
	}
	// One text per key: Go's decoder skips '\r' and '\n' even when strict,
	// so the text's length is checked first.
	enc := rest[idLen+1:]
	if len(enc) != base64.RawURLEncoding.EncodedLen(secretBytes) {
		return "", nil, ErrMalformedKey
	}
	secret, err = base64.RawURLEncoding.Strict().DecodeString(enc)
	if err != nil || len(secret) != secretBytes {
		return "", nil, ErrMalformedKey
	}
	return id, secret, nil
}

// newKey makes a fresh key: its id, its secret and the key text.
func newKey() (id string, secret []byte, key string) {
	var b [idLen/2 + secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	id = hex.EncodeToString(b[:idLen/2])
	secret = b[idLen/2:]
	return id, secret, keyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(secret)
}
