package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"tandem/internal/loadgen"
	"tandem/internal/recommend"
)

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a table for the terminal.
func WriteTable(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "model %s, %s: %d requests over %s\n\n", r.Model, r.Pattern, r.Requests,
		time.Duration(r.Duration*float64(time.Second)).Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\trequests\terrors\tp50\tp95\tp99\tmax\tcold starts\tcold p50\tinstance-s\tbusy\tidle\tcost\tper 1k\tidle cost\t")
	for _, m := range r.Modes {
		coldP50 := "-"
		if m.ColdStarts > 0 {
			coldP50 = fmtMS(m.ColdLatency.P50)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			m.Mode, m.Requests, m.Errors, fmtMS(m.Latency.P50), fmtMS(m.Latency.P95), fmtMS(m.Latency.P99), fmtMS(m.Latency.Max),
			m.ColdStarts, coldP50, Seconds(m.InstanceSeconds), Seconds(m.ByState.Busy), Seconds(m.ByState.Idle),
			money(m.CostTotal, r.Currency), money(m.CostPer1K, r.Currency), money(m.CostIdle, r.Currency))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range r.Modes {
		for _, e := range m.ErrorSamples {
			fmt.Fprintf(w, "%s error: %s\n", m.Mode, e)
		}
	}
	return nil
}

// Seconds writes instance-seconds with the precision their size needs:
// 1234, 12.3, 0.042.
func Seconds(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func money(v float64, currency string) string { return recommend.FormatMoney(v, currency) }

// fmtMS writes milliseconds as a short duration: 2.13ms, 412ms, 1.2s.
func fmtMS(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Microsecond).String()
	}
}

// bar draws a progress bar while a mode runs: on a terminal it redraws
// one line; elsewhere it writes a line at the start and the end.
type bar struct {
	w     io.Writer
	done  chan struct{}
	wg    sync.WaitGroup
	label string
	total int
	d     time.Duration
	p     *loadgen.Progress
	start time.Time
	tty   bool
}

func startBar(w io.Writer, label string, total int, d time.Duration, p *loadgen.Progress) *bar {
	b := &bar{w: w, done: make(chan struct{}), label: label, total: total, d: d, p: p, start: time.Now()}
	if w == nil {
		return b
	}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			b.tty = true
		}
	}
	if !b.tty {
		fmt.Fprintf(w, "%s: sending %d requests over %s\n", label, total, d)
		return b
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			b.draw()
			select {
			case <-b.done:
				return
			case <-t.C:
			}
		}
	}()
	return b
}

func (b *bar) draw() {
	done := int(b.p.Done.Load())
	elapsed := time.Since(b.start)
	frac := 1.0
	if b.total > 0 {
		frac = float64(done) / float64(b.total)
	}
	const width = 30
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r%-10s [%s%s] %3.0f%% %d/%d requests, %d errors, %s/%s ",
		b.label, strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, done, b.total, b.p.Errors.Load(),
		elapsed.Round(100*time.Millisecond), b.d.Round(100*time.Millisecond))
}

func (b *bar) stop() {
	if b.w == nil {
		return
	}
	close(b.done)
	b.wg.Wait()
	if b.tty {
		b.draw()
		fmt.Fprintln(b.w)
		return
	}
	fmt.Fprintf(b.w, "%s: %d requests answered, %d errors, in %s\n", b.label, b.p.Done.Load(), b.p.Errors.Load(), time.Since(b.start).Round(time.Millisecond))
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
