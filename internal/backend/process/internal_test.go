package process

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21\n"
	tests := []struct {
		name    string
		line    string
		want    procStat
		wantErr bool
	}{
		{"plain", "42 (fakemodel) S 1 42 42 0 -1 4194560 145 0 0 0 1 0 0 0 20 0 8 0 424242 0 0\n", procStat{State: 'S', PGID: 42, StartTime: 424242}, false},
		{"name with spaces and parens", "7 (a) b (c)) Z" + tail, procStat{State: 'Z', PGID: 2, StartTime: 424242}, false},
		{"no parens", "7 a S" + tail, procStat{}, true},
		{"short", "7 (a) S 1 2 3", procStat{}, true},
		{"bad start time", "7 (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x 20\n", procStat{}, true},
		{"empty", "", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.line))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStat = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	// Our own stat parses, and this process is running.
	st, err := readStat(os.Getpid())
	if err != nil || !running(os.Getpid(), st.StartTime) || running(os.Getpid(), st.StartTime+1) {
		t.Errorf("readStat(self) = %+v, %v", st, err)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("42 (fakemodel) S 1 42 42 0 -1 4194560 145 0 0 0 1 0 0 0 20 0 8 0 424242 0 0\n"))
	f.Add([]byte("7 (a) b (c)) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStat(b)
		if err == nil && st.State == 0 {
			t.Errorf("parseStat(%q) = %+v without error but no state", b, st)
		}
	})
}

func TestWriteTail(t *testing.T) {
	long := strings.Repeat("x", 100<<10) // longer than the read buffers
	tests := []struct {
		name    string
		content string
		n       int
		want    string
	}{
		{"all", "a\nb\nc\n", 0, "p a\np b\np c\n"},
		{"last two", "a\nb\nc\n", 2, "p b\np c\n"},
		{"more than there are", "a\nb\n", 10, "p a\np b\n"},
		{"no final newline", "a\nb\nc", 2, "p b\np c\n"},
		{"empty lines count", "a\n\n\n", 2, "p \np \n"},
		{"empty file", "", 3, ""},
		{"long lines", "a\n" + long + "\n" + long, 2, "p " + long + "\np " + long + "\n"},
		{"long line, last one", "a\n" + long + "\nb\n", 1, "p b\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.log")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			w := bufio.NewWriter(&buf)
			if err := writeTail(w, path, "p ", tt.n); err != nil {
				t.Fatal(err)
			}
			w.Flush()
			if buf.String() != tt.want {
				t.Errorf("writeTail(%d) = %.80q, want %.80q", tt.n, buf.String(), tt.want)
			}
		})
	}
}

func TestOOMKills(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		file, content string
		want          int
	}{
		{"memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", 3},
		{"memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n", 1},
	}
	for _, tt := range tests {
		d := filepath.Join(dir, tt.file)
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, tt.file), []byte(tt.content), 0o644)
		if got := oomKills(d); got != tt.want {
			t.Errorf("oomKills(%s) = %d, want %d", tt.file, got, tt.want)
		}
	}
	if got := oomKills(filepath.Join(dir, "none")); got != 0 {
		t.Errorf("oomKills of no cgroup = %d", got)
	}
}
