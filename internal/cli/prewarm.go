package cli

import (
	"fmt"
	"io"
	"time"

	"tandem/internal/controller"
)

// printPrewarm adds a deployment's prewarm floor, the learner's next burst,
// the cold start estimate and the latest floor changes to its status.
func printPrewarm(w io.Writer, p *controller.PrewarmStatus) {
	if p == nil {
		return
	}
	clock := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }
	if p.Floor > 0 {
		until := ""
		if p.Until != nil {
			until = " until " + clock(*p.Until)
		}
		fmt.Fprintf(w, "Prewarm:   floor %d%s (%s)\n", p.Floor, until, p.Reason)
	} else if p.Error == "" && p.NextBurst == nil && len(p.Events) > 0 {
		fmt.Fprintf(w, "Prewarm:   no floor now\n")
	}
	if p.NextBurst != nil {
		fmt.Fprintf(w, "Prewarm:   next burst expected %s (every %s)\n", clock(*p.NextBurst), p.Period)
	}
	if p.Error != "" {
		fmt.Fprintf(w, "Prewarm:   off: %s\n", p.Error)
	}
	if p.ColdStartEstimate != "" {
		fmt.Fprintf(w, "Cold start: %s expected (median of the last measured starts; requests with a shorter deadline get 503 or the fallback)\n", p.ColdStartEstimate)
	}
	for _, e := range p.Events {
		fmt.Fprintf(w, "  %s  floor %d -> %d: %s\n", clock(e.At), e.From, e.To, e.Reason)
	}
}
