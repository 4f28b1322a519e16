package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The metric families read from tandem's /metrics.
const (
	phaseFamily = "tandem_instance_start_phase_seconds"
	waitFamily  = "tandem_cold_start_wait_seconds"
)

// queuedPhase names the activator wait of the cold request, which tandem
// records apart from the instance's start phases.
const queuedPhase = "queued"

// ErrMalformed means a line of a wanted metric family could not be read.
var ErrMalformed = errors.New("malformed metrics line")

// parseMetrics reads the Prometheus text format and returns, for model, the
// _sum and _count of each start phase and of the cold-start wait, keyed
// "PHASE/sum" and "PHASE/count" (the wait under the phase name "queued").
// Other lines are skipped.
func parseMetrics(r io.Reader, model string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name = strings.TrimSpace(name)
		var kind string
		switch name {
		case phaseFamily + "_sum", waitFamily + "_sum":
			kind = "sum"
		case phaseFamily + "_count", waitFamily + "_count":
			kind = "count"
		default:
			continue
		}
		labels, value, err := splitLabels(rest)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		if labels["model"] != model {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			return nil, fmt.Errorf("%q: no value: %w", line, ErrMalformed)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %w: %w", line, ErrMalformed, err)
		}
		phase := labels["phase"]
		if strings.HasPrefix(name, waitFamily) {
			phase = queuedPhase
		}
		if phase == "" {
			return nil, fmt.Errorf("%q: no phase label: %w", line, ErrMalformed)
		}
		out[phase+"/"+kind] = v
	}
	return out, sc.Err()
}

// splitLabels reads `k="v",k2="v2"} value` into the label set and what
// follows the closing brace.
func splitLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		key, rest, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(rest, `"`) {
			return nil, "", ErrMalformed
		}
		var val strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(rest[i])
				}
				continue
			}
			val.WriteByte(rest[i])
		}
		if i >= len(rest) {
			return nil, "", ErrMalformed
		}
		labels[strings.TrimSpace(key)] = val.String()
		s = rest[i+1:]
	}
}

// phaseOrder is the order tandem goes through a start; phases not listed
// come after, by name.
var phaseOrder = []string{"trigger", "exec", "create", "start", "ready", "total", queuedPhase}

// phaseMeans returns each phase's mean over the observations made between
// two scrapes.
func phaseMeans(before, after map[string]float64) []Phase {
	var out []Phase
	for key, count := range after {
		name, ok := strings.CutSuffix(key, "/count")
		if !ok {
			continue
		}
		n := count - before[key]
		if n <= 0 {
			continue
		}
		sum := after[name+"/sum"] - before[name+"/sum"]
		out = append(out, Phase{Name: name, Count: int(n), Mean: time.Duration(sum / n * float64(time.Second))})
	}
	rank := func(name string) int {
		if i := slices.Index(phaseOrder, name); i >= 0 {
			return i
		}
		return len(phaseOrder)
	}
	slices.SortFunc(out, func(a, b Phase) int {
		if ra, rb := rank(a.Name), rank(b.Name); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}
