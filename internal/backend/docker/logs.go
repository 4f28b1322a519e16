package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
)

// keptLogLines is how many lines of an ended instance's output the backend
// keeps in memory after removing its container, so that `tandem logs` can
// show why it ended.
const keptLogLines = 200

// Logs writes the last tail lines (all when tail <= 0) of every instance of
// a deployment, oldest instance first, each line prefixed "<instance-id> | ".
// Running instances are read from the engine's log API; instances that ended
// by themselves show the lines kept when their container was removed.
func (b *Backend) Logs(ctx context.Context, deployment string, tail int, w io.Writer) error {
	b.mu.Lock()
	var insts []*inst
	for _, in := range b.insts {
		if in.info.Deployment == deployment {
			insts = append(insts, in)
		}
	}
	b.mu.Unlock()
	slices.SortFunc(insts, func(a, b *inst) int { return a.info.StartedAt.Compare(b.info.StartedAt) })

	for _, in := range insts {
		pw := &prefixWriter{w: w, prefix: in.info.ID + " | "}
		lines, ended := in.keptLogs()
		if ended {
			if tail > 0 && len(lines) > tail {
				lines = lines[len(lines)-tail:]
			}
			for _, l := range lines {
				if _, err := pw.Write(l); err != nil {
					return err
				}
			}
			continue
		}
		if err := b.copyLogs(ctx, in.cid, tail, pw); err != nil {
			return fmt.Errorf("logs of %s: %w", in.info.ID, err)
		}
		if err := pw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// copyLogs writes a container's stdout and stderr, interleaved as the
// engine recorded them, to w.
func (b *Backend) copyLogs(ctx context.Context, cid string, tail int, w io.Writer) error {
	opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true}
	if tail > 0 {
		opts.Tail = strconv.Itoa(tail)
	}
	rc, err := b.eng.ContainerLogs(ctx, cid, opts)
	if err != nil {
		return err
	}
	defer rc.Close()
	// The container has no TTY, so the stream is multiplexed; one writer for
	// both streams keeps their order.
	_, err = stdcopy.StdCopy(w, w, rc)
	return err
}

// prefixWriter writes each line it is given with a prefix; a line without
// its newline is held until the newline or Flush.
type prefixWriter struct {
	w       io.Writer
	prefix  string
	partial []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.partial = append(p.partial, b...)
			break
		}
		line := append(p.partial, b[:i+1]...)
		p.partial = p.partial[:0]
		if _, err := io.WriteString(p.w, p.prefix); err != nil {
			return 0, err
		}
		if _, err := p.w.Write(line); err != nil {
			return 0, err
		}
		b = b[i+1:]
	}
	return n, nil
}

// Flush writes a held partial line, ending it with a newline.
func (p *prefixWriter) Flush() error {
	if len(p.partial) == 0 {
		return nil
	}
	_, err := p.Write([]byte{'\n'})
	return err
}

// lineRing keeps the last lines written to it.
type lineRing struct {
	max     int
	lines   [][]byte
	partial []byte
}

func (r *lineRing) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			r.partial = append(r.partial, b...)
			break
		}
		r.add(append(r.partial, b[:i+1]...))
		r.partial = nil
		b = b[i+1:]
	}
	return n, nil
}

func (r *lineRing) add(line []byte) {
	if len(r.lines) == r.max {
		r.lines = slices.Delete(r.lines, 0, 1)
	}
	r.lines = append(r.lines, line)
}

// Lines returns the kept lines, a held partial line last (with a newline).
func (r *lineRing) Lines() [][]byte {
	if len(r.partial) > 0 {
		r.add(append(r.partial, '\n'))
		r.partial = nil
	}
	return r.lines
}
