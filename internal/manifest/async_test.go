package manifest

import (
	"strings"
	"testing"
	"time"
)

func TestManifest_Async(t *testing.T) {
	base := "name: m\nruntime: {command: [x]}\n"
	tests := []struct {
		name    string
		yaml    string
		retries int
		age     time.Duration
		err     string // a substring of the error; "" means valid
	}{
		{name: "absent: Lambda's defaults", yaml: base, retries: 2, age: 6 * time.Hour},
		{name: "empty block: defaults", yaml: base + "async: {}\n", retries: 2, age: 6 * time.Hour},
		{name: "zero retries kept", yaml: base + "async: {retries: 0, max_event_age: 10m}\n", retries: 0, age: 10 * time.Minute},
		{name: "destinations", yaml: base + "async: {on_success: 'http://127.0.0.1:9/ok', on_failure: 'https://example.com/dlq'}\n", retries: 2, age: 6 * time.Hour},
		{name: "too many retries", yaml: base + "async: {retries: 3}\n", err: "async.retries: 3 is out of range"},
		{name: "negative retries", yaml: base + "async: {retries: -1}\n", err: "async.retries"},
		{name: "age too long", yaml: base + "async: {max_event_age: 7h}\n", err: "async.max_event_age: 7h0m0s is out of range"},
		{name: "age too short", yaml: base + "async: {max_event_age: 1s}\n", err: "async.max_event_age"},
		{name: "destination not http", yaml: base + "async: {on_failure: 'ftp://x/y'}\n", err: "async.on_failure: \"ftp://x/y\" must be an http:// or https:// URL"},
		{name: "destination without host", yaml: base + "async: {on_success: 'http:///x'}\n", err: "async.on_success"},
		{name: "unknown field", yaml: base + "async: {retry: 1}\n", err: "retry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.yaml), "")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := m.AsyncOrDefault()
			if *a.Retries != tt.retries || a.MaxEventAge.D() != tt.age {
				t.Errorf("retries %d, max_event_age %s; want %d, %s", *a.Retries, a.MaxEventAge.D(), tt.retries, tt.age)
			}
		})
	}
}
