package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// logFilesKept is how many log files (instances) a deployment keeps.
const logFilesKept = 20

func (b *Backend) logDir(deployment string) string {
	return filepath.Join(b.cfg.DataDir, "logs", deployment)
}

// logFile is one instance's log.
type logFile struct {
	id      string
	path    string
	created time.Time
}

// logFiles lists a deployment's log files, oldest instance first.
func (b *Backend) logFiles(deployment string) ([]logFile, error) {
	dir := b.logDir(deployment)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var files []logFile
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		files = append(files, logFile{id: id, path: p, created: birthTime(p)})
	}
	sort.Slice(files, func(i, j int) bool {
		if !files[i].created.Equal(files[j].created) {
			return files[i].created.Before(files[j].created)
		}
		return files[i].id < files[j].id
	})
	return files, nil
}

// startedXattr records on a log file when its instance started: file
// creation times are too coarse (a clock tick) to order instances started
// in quick succession.
const startedXattr = "user.tandem.started"

// markStarted records the instance's start time on its log file. Where the
// file system has no user xattrs, order falls back to the creation time.
func markStarted(f *os.File, at time.Time) {
	_ = unix.Fsetxattr(int(f.Fd()), startedXattr, []byte(strconv.FormatInt(at.UnixNano(), 10)), 0)
}

// birthTime returns when the file's instance started (see markStarted),
// else when the file was created, else when it was last written.
func birthTime(path string) time.Time {
	buf := make([]byte, 32)
	if n, err := unix.Getxattr(path, startedXattr, buf); err == nil {
		if ns, err := strconv.ParseInt(string(buf[:n]), 10, 64); err == nil {
			return time.Unix(0, ns)
		}
	}
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_BTIME|unix.STATX_MTIME, &st); err != nil {
		return time.Time{}
	}
	ts := st.Mtime
	if st.Mask&unix.STATX_BTIME != 0 {
		ts = st.Btime
	}
	return time.Unix(ts.Sec, int64(ts.Nsec))
}

// pruneLogs removes a deployment's oldest log files beyond logFilesKept,
// never the log of an instance still running.
func (b *Backend) pruneLogs(deployment string) {
	files, err := b.logFiles(deployment)
	if err != nil || len(files) <= logFilesKept {
		return
	}
	b.mu.Lock()
	live := map[string]bool{}
	for id, inst := range b.insts {
		if !inst.exited {
			live[id] = true
		}
	}
	b.mu.Unlock()
	extra := len(files) - logFilesKept
	for _, f := range files {
		if extra == 0 {
			break
		}
		if live[f.id] {
			continue
		}
		if err := os.Remove(f.path); err == nil || errors.Is(err, os.ErrNotExist) {
			extra--
		}
	}
}

// Logs writes the last tail lines (all when tail <= 0) of every kept log
// file of a deployment, oldest instance first, each line prefixed with
// "<instance-id> | ". A deployment without logs writes nothing.
func (b *Backend) Logs(ctx context.Context, deployment string, tail int, w io.Writer) error {
	if !validName(deployment) {
		return fmt.Errorf("logs: %q is not a deployment name", deployment)
	}
	files, err := b.logFiles(deployment)
	if err != nil {
		return fmt.Errorf("logs of %s: %w", deployment, err)
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := writeTail(bw, f.path, f.id+" | ", tail); err != nil {
			if errors.Is(err, os.ErrNotExist) { // pruned meanwhile
				continue
			}
			return fmt.Errorf("logs of %s: %w", deployment, err)
		}
	}
	return bw.Flush()
}

// writeTail writes the last n lines (all when n <= 0) of the file at path
// to w, each prefixed. A last line without a newline gets one.
func writeTail(w *bufio.Writer, path, prefix string, n int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size() // what is appended while reading is left for next time
	var off int64
	if n > 0 {
		if off, err = tailOffset(f, size, n); err != nil {
			return err
		}
	}
	return copyPrefixed(w, io.NewSectionReader(f, off, size-off), prefix)
}

// tailOffset returns where the last n lines of the first size bytes of r
// begin, reading backwards from the end.
func tailOffset(r io.ReaderAt, size int64, n int) (int64, error) {
	buf := make([]byte, 32<<10)
	count := 0
	for end := size; end > 0; {
		start := max(0, end-int64(len(buf)))
		chunk := buf[:end-start]
		if _, err := r.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] != '\n' || start+int64(i) == size-1 {
				continue // the file's final newline ends a line, it starts none
			}
			if count++; count == n {
				return start + int64(i) + 1, nil
			}
		}
		end = start
	}
	return 0, nil
}

// copyPrefixed copies r to w line by line, writing prefix before each line.
func copyPrefixed(w *bufio.Writer, r io.Reader, prefix string) error {
	br := bufio.NewReaderSize(r, 32<<10)
	atStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if atStart {
				w.WriteString(prefix)
			}
			w.Write(chunk)
			atStart = chunk[len(chunk)-1] == '\n'
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if !atStart {
				w.WriteByte('\n')
			}
			return nil
		default:
			return err
		}
	}
}
