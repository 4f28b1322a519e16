package docker

import (
	"context"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"tandem/internal/backend"
)

var _ backend.LogFollower = (*Backend)(nil)

// followPoll is how often FollowLogs looks for instances started since.
const followPoll = 500 * time.Millisecond

// FollowLogs implements backend.LogFollower. Each running container's
// output comes from the engine's log stream (follow), one goroutine per
// container, which ends with the container or with ctx; instances started
// later are found every followPoll and followed from their first line, and
// ones that ended before they were seen show their kept lines. It returns
// nil once ctx has ended and every stream has stopped.
func (b *Backend) FollowLogs(ctx context.Context, deployment string, tail int, w io.Writer, flush func()) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	sink := &lineSink{w: w, flush: flush, cancel: cancel}
	flush() // the answer begins even before the first line
	seen := map[string]bool{}
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for first := true; ; first = false {
		b.mu.Lock()
		var insts []*inst
		for _, in := range b.insts {
			if in.info.Deployment == deployment && !seen[in.info.ID] {
				insts = append(insts, in)
			}
		}
		b.mu.Unlock()
		slices.SortFunc(insts, func(a, b *inst) int { return a.info.StartedAt.Compare(b.info.StartedAt) })
		n := 0
		if first {
			n = tail
		}
		for _, in := range insts {
			seen[in.info.ID] = true
			pw := &prefixWriter{w: sink.writer(in.info.ID + " | ")}
			if lines, ended := in.keptLogs(); ended {
				if n > 0 && len(lines) > n {
					lines = lines[len(lines)-n:]
				}
				for _, l := range lines {
					pw.Write(l)
				}
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: true}
				if n > 0 {
					opts.Tail = strconv.Itoa(n)
				}
				rc, err := b.eng.ContainerLogs(ctx, in.cid, opts)
				if err != nil {
					return // removed meanwhile, or ctx ended
				}
				defer rc.Close()
				stdcopy.StdCopy(pw, pw, rc)
				pw.Flush()
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// lineSink serialises the lines of several containers onto one writer,
// flushing after each; a failed write (the reader went away) ends the
// follow.
type lineSink struct {
	mu     sync.Mutex
	w      io.Writer
	flush  func()
	cancel func()
	buf    []byte
}

// writer returns a writer of whole lines that writes each under prefix.
func (s *lineSink) writer(prefix string) io.Writer {
	return writerFunc(func(line []byte) (int, error) {
		if len(line) == 0 { // prefixWriter's empty prefix
			return 0, nil
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.buf = append(append(s.buf[:0], prefix...), line...)
		if _, err := s.w.Write(s.buf); err != nil {
			s.cancel()
			return 0, err
		}
		s.flush()
		return len(line), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
