package trace

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Request
	}{
		{name: "empty", in: "", want: nil},
		{name: "timestamps only", in: "0\n0.5\n1.25\n", want: []Request{{At: 0}, {At: 500 * time.Millisecond}, {At: 1250 * time.Millisecond}}},
		{
			name: "header, comments, blank lines, paths and payloads",
			in:   "seconds,path,payload\n# warm-up\n\n0.001,/sleep?d=2ms\n0.002,/predict,\"{\"\"x\"\": [1, 2]}\"\n0.002,,plain\n",
			want: []Request{
				{At: time.Millisecond, Path: "/sleep?d=2ms"},
				{At: 2 * time.Millisecond, Path: "/predict", Body: `{"x": [1, 2]}`},
				{At: 2 * time.Millisecond, Body: "plain"},
			},
		},
		{name: "equal timestamps are sorted", in: "3\n3\n", want: []Request{{At: 3 * time.Second}, {At: 3 * time.Second}}},
		{name: "spaces around fields", in: " 1.5 , /a \n", want: []Request{{At: 1500 * time.Millisecond, Path: "/a"}}},
		{name: "nanosecond precision", in: "0.000000001\n", want: []Request{{At: 1}}},
		{name: "line breaks in a payload read as \\n", in: "0,,\"a\r\nb\r\r\nc\rd\"\r\n", want: []Request{{Body: "a\nb\nc\rd"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Parse(strings.NewReader(tt.in), "x.csv")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tr.Requests, tt.want) {
				t.Fatalf("got %+v\nwant %+v", tr.Requests, tt.want)
			}
		})
	}
}

func TestParse_errors(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantLine int
		wantMsg  string
	}{
		{name: "not a number", in: "0\nabc\n", wantLine: 2, wantMsg: `timestamp "abc" is not a decimal number of seconds`},
		{name: "negative", in: "0\n1\n-1.5\n", wantLine: 3, wantMsg: "timestamp -1.5 is negative"},
		{name: "unsorted", in: "0\n2\n1.5\n", wantLine: 3, wantMsg: "timestamp 1.5 is before the previous line's 2"},
		{name: "unsorted after a comment", in: "# c\n5\n\n4\n", wantLine: 4, wantMsg: "is before the previous line's 5"},
		{name: "NaN", in: "NaN\n", wantLine: 1, wantMsg: "not a decimal number"},
		{name: "infinite", in: "0\n+Inf\n", wantLine: 2, wantMsg: "not a decimal number"},
		{name: "too late", in: "1e12\n", wantLine: 1, wantMsg: "more than a year"},
		{name: "missing timestamp", in: "1\n,/a\n", wantLine: 2, wantMsg: "missing timestamp"},
		{name: "too many fields", in: "1,/a,b,c\n", wantLine: 1, wantMsg: "4 fields"},
		{name: "relative path", in: "1,predict\n", wantLine: 1, wantMsg: `path "predict" must start with /`},
		{name: "broken quotes", in: "1\n2,/a,\"open\n", wantLine: 2, wantMsg: "quote"},
		{name: "header only on the first line", in: "1\nseconds\n", wantLine: 2, wantMsg: "not a decimal number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in), "day.csv")
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v is not ErrInvalid", err)
			}
			var te *Error
			if !errors.As(err, &te) || te.Line != tt.wantLine {
				t.Fatalf("error %q: want line %d", err, tt.wantLine)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.HasPrefix(err.Error(), "day.csv:") {
				t.Fatalf("error %q: want it to name the file and say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestTrace_Write(t *testing.T) {
	in := &Trace{Requests: []Request{
		{At: 0},
		{At: 1500 * time.Millisecond, Path: "/a?b=1"},
		{At: 1500*time.Millisecond + 1, Body: "x,\"y\"\nz"},
		{At: 3 * time.Second, Path: "/p", Body: " lead"},
	}}
	var buf bytes.Buffer
	if err := in.Write(&buf); err != nil {
		t.Fatal(err)
	}
	out, err := Parse(&buf, "rt")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	if got := out.Duration(); got != 3*time.Second {
		t.Fatalf("Duration = %v", got)
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t.csv")
	if err := os.WriteFile(p, []byte("0\n-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+":2: ") {
		t.Fatalf("err = %v; want it to name %s line 2", err, p)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.csv")); err == nil {
		t.Fatal("missing file: no error")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"0\n1\n", "seconds,path\n0,/a\n", "0.5,/p,\"{\"\"a\"\":1}\"\n", "1\n0\n", "-1\n", "x\n",
		"# c\n\n1e3,/a,b\n", "1,/a,b,c\n", "\"1\n", "0,/a\r\n1,/b\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Parse(bytes.NewReader(data), "fuzz")
		if err != nil {
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a *trace.Error", err)
			}
			return
		}
		var prev time.Duration
		for i, r := range tr.Requests {
			if r.At < prev || r.At < 0 || r.At > MaxOffset {
				t.Fatalf("request %d at %v after %v", i, r.At, prev)
			}
			if r.Path != "" && r.Path[0] != '/' {
				t.Fatalf("request %d: path %q", i, r.Path)
			}
			prev = r.At
		}
		var buf bytes.Buffer
		if err := tr.Write(&buf); err != nil {
			t.Fatal(err)
		}
		back, err := Parse(&buf, "again")
		if err != nil {
			t.Fatalf("written trace does not parse: %v\n%q", err, buf.String())
		}
		if len(back.Requests) != len(tr.Requests) {
			t.Fatalf("round trip: %d requests, want %d", len(back.Requests), len(tr.Requests))
		}
		for i := range tr.Requests {
			if back.Requests[i] != tr.Requests[i] {
				t.Fatalf("round trip: request %d = %+v, want %+v", i, back.Requests[i], tr.Requests[i])
			}
		}
	})
}
