// Package trace reads and writes request traces: CSV files with one request
// a line, giving when it leaves (seconds since the start, decimal) and
// optionally the path to call and a payload to send. `tandem bench` replays
// them and `tandem recommend` simulates them.
//
//	# seconds,path,payload   (a header line and # comments are allowed)
//	0.000
//	0.250,/predict
//	1.5,/v2/models/digits/infer,"{""inputs"": []}"
//
// A trace is outside input: Parse rejects bad lines, negative, unsorted or
// absurd timestamps with an error that names the line.
package trace

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// MaxOffset bounds a timestamp: a trace longer than a year is a mistake.
const MaxOffset = 366 * 24 * time.Hour

// ErrInvalid is matched by errors.Is for every *Error.
var ErrInvalid = errors.New("invalid trace")

// Error is a problem with one line of a trace.
type Error struct {
	File string // the trace's name, as given to Parse
	Line int    // 1-based; 0 when the problem is not on a line
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Request is one request of a trace.
type Request struct {
	// At is when the request leaves, counted from the start of the trace.
	At time.Duration
	// Path is the path to call (with its query); empty means the caller's
	// default path.
	Path string
	// Body is the payload; empty means the caller's default payload.
	Body string
}

// Trace is a list of requests in the order they leave (At never decreases).
type Trace struct {
	Requests []Request
}

// Len returns the number of requests.
func (t *Trace) Len() int { return len(t.Requests) }

// Duration returns when the last request leaves (0 for an empty trace).
func (t *Trace) Duration() time.Duration {
	if len(t.Requests) == 0 {
		return 0
	}
	return t.Requests[len(t.Requests)-1].At
}

// Load reads a trace file.
func Load(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a trace. name is used in error messages (the file's path).
// Blank lines and lines starting with # are skipped, and a first line whose
// first field is a column name (seconds, time, t, timestamp) is read as a
// header.
func Parse(r io.Reader, name string) (*Trace, error) {
	cr := csv.NewReader(bufio.NewReaderSize(r, 64<<10))
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cr.ReuseRecord = true
	t := &Trace{}
	paths := map[string]string{} // interned: traces repeat a few paths a million times
	var prev time.Duration
	first := true
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, &Error{File: name, Line: pe.Line, Msg: pe.Err.Error()}
			}
			return nil, fmt.Errorf("trace %s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		if first {
			first = false
			if isHeader(rec[0]) {
				continue
			}
		}
		bad := func(format string, args ...any) error {
			return &Error{File: name, Line: line, Msg: fmt.Sprintf(format, args...)}
		}
		if len(rec) > 3 {
			return nil, bad("%d fields; want seconds[,path[,payload]]", len(rec))
		}
		at, err := parseSeconds(strings.TrimSpace(rec[0]))
		if err != nil {
			return nil, bad("%v", err)
		}
		if at < prev {
			return nil, bad("timestamp %s is before the previous line's %s: a trace must be sorted by time", fmtSeconds(at), fmtSeconds(prev))
		}
		prev = at
		req := Request{At: at}
		if len(rec) > 1 {
			p := strings.TrimSpace(rec[1])
			if p != "" && !strings.HasPrefix(p, "/") {
				return nil, bad("path %q must start with /", p)
			}
			if s, ok := paths[p]; ok {
				p = s
			} else {
				p = strings.Clone(p)
				paths[p] = p
			}
			req.Path = p
		}
		if len(rec) > 2 {
			req.Body = payload(rec[2])
		}
		t.Requests = append(t.Requests, req)
	}
	return t, nil
}

// payload returns a payload field as a Request's Body. CSV reads a quoted
// \r\n as \n but keeps a lone \r, so \r's before a line break could not
// be written back: they are dropped, and a payload's line breaks read as \n.
func payload(field string) string {
	if !strings.Contains(field, "\r\n") {
		return strings.Clone(field)
	}
	var b strings.Builder
	for i := 0; i < len(field); i++ {
		if field[i] == '\r' {
			j := i
			for j < len(field) && field[j] == '\r' {
				j++
			}
			if j < len(field) && field[j] == '\n' {
				i = j - 1
				continue
			}
		}
		b.WriteByte(field[i])
	}
	return b.String()
}

func isHeader(field string) bool {
	switch strings.ToLower(strings.TrimSpace(field)) {
	case "seconds", "time", "t", "timestamp", "at":
		return true
	}
	return false
}

// parseSeconds reads a non-negative decimal number of seconds.
func parseSeconds(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("missing timestamp (seconds since the start)")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("timestamp %q is not a decimal number of seconds", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("timestamp %s is negative", s)
	}
	if f > MaxOffset.Seconds() {
		return 0, fmt.Errorf("timestamp %s is more than a year after the start", s)
	}
	return time.Duration(math.Round(f * 1e9)), nil
}

func fmtSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// Write writes t as CSV that Parse reads back to the same trace.
func (t *Trace) Write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := csv.NewWriter(bw)
	rec := make([]string, 0, 3)
	for _, r := range t.Requests {
		rec = append(rec[:0], fmtSeconds(r.At))
		switch {
		case r.Body != "":
			rec = append(rec, r.Path, r.Body)
		case r.Path != "":
			rec = append(rec, r.Path)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return bw.Flush()
}

// Save writes t to a file.
func (t *Trace) Save(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := t.Write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
