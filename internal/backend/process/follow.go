package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// followPoll is how often FollowLogs looks for new output. Instances write
// to plain files, which the process backend does not watch otherwise; a
// poll keeps one follower to a directory read and a few stats a tick.
const followPoll = 250 * time.Millisecond

// followed is how far FollowLogs has read one log file.
type followed struct {
	off     int64 // the next byte to read
	midLine bool  // part of a line longer than a read chunk was written
}

// FollowLogs implements backend.LogFollower: it writes what Logs writes,
// then every complete line the deployment's instances append, those started
// later included (from their first line), calling flush after each batch. It
// returns nil when ctx ends, after reading the files a last time, or when
// writing to w fails (the reader went away).
func (b *Backend) FollowLogs(ctx context.Context, deployment string, tail int, w io.Writer, flush func()) error {
	if !validName(deployment) {
		return fmt.Errorf("logs: %q is not a deployment name", deployment)
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	seen := map[string]*followed{}
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for first := true; ; first = false {
		last := ctx.Err() != nil
		files, err := b.logFiles(deployment)
		if err != nil {
			return fmt.Errorf("logs of %s: %w", deployment, err)
		}
		kept := make(map[string]bool, len(files))
		for _, f := range files {
			kept[f.path] = true
			st := seen[f.path]
			n := 0
			if st == nil {
				st = &followed{}
				seen[f.path] = st
				if first {
					n = tail
				}
			}
			if err := copyNewLines(bw, f.path, f.id+" | ", st, n); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("logs of %s: %w", deployment, err)
			}
		}
		for p := range seen {
			if !kept[p] { // pruned
				delete(seen, p)
			}
		}
		if bw.Buffered() > 0 || first {
			if bw.Flush() != nil {
				return nil
			}
			flush()
		}
		if last {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// copyNewLines writes the complete lines of the file at path from st.off
// on (from its last tail lines when tail > 0), each prefixed, and moves
// st.off past them. A line still being written waits for its newline,
// unless it is longer than a read chunk: that is written in pieces, under
// one prefix.
func copyNewLines(w *bufio.Writer, path, prefix string, st *followed, tail int) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() == st.off && tail <= 0 {
		return nil // nothing new: the usual case, without an open
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size < st.off { // truncated: start over
		st.off, st.midLine = 0, false
	}
	if tail > 0 {
		if st.off, err = tailOffset(f, size, tail); err != nil {
			return err
		}
	}
	if size == st.off {
		return nil
	}
	br := bufio.NewReaderSize(io.NewSectionReader(f, st.off, size-st.off), 32<<10)
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			if !st.midLine {
				w.WriteString(prefix)
			}
			w.Write(chunk)
			st.off += int64(len(chunk))
			st.midLine = err != nil
		case errors.Is(err, io.EOF):
			return nil // a line being written: the next poll takes it
		default:
			return err
		}
	}
}
