package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"tandem/internal/manifest"
)

// WriteHTML writes the report as one self-contained HTML page: the summary
// table and charts of instances, latency and cumulative cost over time for
// each mode, drawn as inline SVG. It loads nothing from anywhere.
func WriteHTML(w io.Writer, r *Report) error {
	page := htmlPage{Report: r, Title: fmt.Sprintf("tandem bench: %s, %s", r.Model, r.Pattern)}
	for _, m := range r.Modes {
		page.Rows = append(page.Rows, htmlRow{
			Mode: string(m.Mode), Color: colorOf(m.Mode, r), Requests: m.Requests, Errors: m.Errors,
			P50: fmtMS(m.Latency.P50), P95: fmtMS(m.Latency.P95), P99: fmtMS(m.Latency.P99), Max: fmtMS(m.Latency.Max),
			Cold: m.ColdStarts, ColdP50: fmtMS(m.ColdLatency.P50),
			InstanceSeconds: Seconds(m.InstanceSeconds), Busy: Seconds(m.ByState.Busy), Idle: Seconds(m.ByState.Idle),
			Cost: money(m.CostTotal, r.Currency), Per1K: money(m.CostPer1K, r.Currency), IdleCost: money(m.CostIdle, r.Currency),
		})
	}
	var inst, lat, cst []series
	for _, m := range r.Modes {
		c := colorOf(m.Mode, r)
		s := series{name: string(m.Mode), color: c}
		for _, p := range m.Series.Instances {
			s.x = append(s.x, p.T)
			s.y = append(s.y, float64(p.Ready+p.Starting))
		}
		inst = append(inst, s)
		s = series{name: string(m.Mode), color: c}
		for _, p := range m.Series.Latency {
			if p.Requests > p.Errors {
				s.x = append(s.x, p.T)
				s.y = append(s.y, p.P99)
			}
		}
		lat = append(lat, s)
		s = series{name: string(m.Mode), color: c}
		for _, p := range m.Series.Instances {
			s.x = append(s.x, p.T)
			s.y = append(s.y, p.Cost)
		}
		cst = append(cst, s)
	}
	xMax := r.Duration
	for _, m := range r.Modes {
		xMax = max(xMax, m.Duration)
	}
	page.Charts = []svgChart{
		plot("Instances (ready and starting)", "instances", inst, xMax, scaleLinear, true, strconv.Itoa),
		plot("p99 latency of the requests sent in each interval", "ms", lat, xMax, scaleLog, false, func(v int) string { return strconv.Itoa(v) }),
		plot("Cumulative cost", r.Currency, cst, xMax, scaleLinear, false, nil),
	}
	return pageTemplate.Execute(w, page)
}

type htmlPage struct {
	*Report
	Title  string
	Rows   []htmlRow
	Charts []svgChart
}

type htmlRow struct {
	Mode, Color                                        string
	Requests, Errors, Cold                             int
	P50, P95, P99, Max, ColdP50                        string
	InstanceSeconds, Busy, Idle, Cost, Per1K, IdleCost string
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

// colorOf gives serverless blue and dedicated red in every report.
func colorOf(m manifest.Mode, r *Report) string {
	switch m {
	case manifest.Serverless:
		return palette[0]
	case manifest.Dedicated:
		return palette[1]
	}
	for i, x := range r.Modes {
		if x.Mode == m {
			return palette[2+i%(len(palette)-2)]
		}
	}
	return palette[2]
}

type series struct {
	name, color string
	x, y        []float64
}

type scale int

const (
	scaleLinear scale = iota
	scaleLog
)

// svgChart is one chart, ready for the template.
type svgChart struct {
	Title, Unit string
	W, H        int
	Left, Top   int
	PlotW       int
	PlotH       int
	XTicks      []svgTick
	YTicks      []svgTick
	Lines       []svgLine
}

type svgTick struct {
	Pos   float64
	Label string
}

type svgLine struct {
	Name, Color, D string
	Points         int
	LegendY        int
}

// plot lays out a line chart of several series over [0, xMax].
func plot(title, unit string, ss []series, xMax float64, sc scale, step bool, intLabel func(int) string) svgChart {
	c := svgChart{Title: title, Unit: unit, W: 860, H: 300, Left: 70, Top: 30}
	c.PlotW, c.PlotH = c.W-c.Left-130, c.H-c.Top-40
	yMin, yMax := 0.0, 0.0
	first := true
	for _, s := range ss {
		for _, v := range s.y {
			if sc == scaleLog && v <= 0 {
				continue
			}
			if first {
				yMin, yMax, first = v, v, false
			}
			yMin, yMax = min(yMin, v), max(yMax, v)
		}
	}
	if xMax <= 0 {
		xMax = 1
	}
	var yOf func(v float64) float64
	switch sc {
	case scaleLog:
		lo := math.Pow(10, math.Floor(math.Log10(max(yMin, 0.01))))
		hi := math.Pow(10, math.Ceil(math.Log10(max(yMax, lo*10))))
		if hi <= lo {
			hi = lo * 10
		}
		yOf = func(v float64) float64 {
			v = min(max(v, lo), hi)
			return float64(c.PlotH) * (1 - (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo)))
		}
		for v := lo; v <= hi*1.0001; v *= 10 {
			c.YTicks = append(c.YTicks, svgTick{Pos: yOf(v), Label: trimFloat(v)})
		}
	default:
		yMin = 0
		ticks, top := niceTicks(yMax)
		yOf = func(v float64) float64 { return float64(c.PlotH) * (1 - v/top) }
		for _, v := range ticks {
			label := trimFloat(v)
			if intLabel != nil {
				if v != math.Trunc(v) {
					continue
				}
				label = intLabel(int(v))
			}
			c.YTicks = append(c.YTicks, svgTick{Pos: yOf(v), Label: label})
		}
	}
	xTicks, xTop := niceTicks(xMax)
	xOf := func(v float64) float64 { return float64(c.PlotW) * v / xTop }
	for _, v := range xTicks {
		c.XTicks = append(c.XTicks, svgTick{Pos: xOf(v), Label: (time.Duration(v * float64(time.Second))).String()})
	}
	for i, s := range ss {
		var b strings.Builder
		n := 0
		for j := range s.x {
			if sc == scaleLog && s.y[j] <= 0 {
				continue
			}
			x, y := xOf(s.x[j]), yOf(s.y[j])
			switch {
			case n == 0:
				fmt.Fprintf(&b, "M%.1f %.1f", x, y)
			case step:
				fmt.Fprintf(&b, "H%.1f V%.1f", x, y)
			default:
				fmt.Fprintf(&b, "L%.1f %.1f", x, y)
			}
			n++
		}
		if n == 1 {
			b.WriteString("h3") // a lone point still shows
		}
		c.Lines = append(c.Lines, svgLine{Name: s.name, Color: s.color, D: b.String(), Points: n, LegendY: 14 + 18*i})
	}
	return c
}

// niceTicks returns about five round tick values from 0 to at least top,
// and the last of them.
func niceTicks(top float64) ([]float64, float64) {
	if !(top > 0) {
		top = 1
	}
	raw := top / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, f := range []float64{1, 2, 2.5, 5, 10} {
		if f*mag >= raw {
			step = f * mag
			break
		}
	}
	var ticks []float64
	v := 0.0
	for i := 0; ; i++ {
		v = step * float64(i)
		ticks = append(ticks, v)
		if v >= top*0.98 { // a hair over a round number draws at its edge
			break
		}
	}
	return ticks, v
}

func trimFloat(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default: // no exponent: 0.00005, not 5e-05
		f := strconv.FormatFloat(v, 'f', 2-int(math.Floor(math.Log10(a))), 64)
		return strings.TrimRight(strings.TrimRight(f, "0"), ".")
	}
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{"num": func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.meta { color: #555; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 24px; font-size: 13px; }
th, td { padding: 4px 7px; text-align: right; border-bottom: 1px solid #ddd; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px; }
svg.chart { display: block; margin: 0 0 20px; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #444; }
svg.chart .title { font-size: 13px; font-weight: 600; fill: #222; }
svg.chart .grid { stroke: #e5e5e5; stroke-width: 1; }
svg.chart .axis { stroke: #888; stroke-width: 1; }
svg.chart path.series { fill: none; stroke-width: 2; stroke-linejoin: round; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="meta">{{.Requests}} requests over {{printf "%.1f" .Duration}} s per mode{{if .Manifest}}, manifest {{.Manifest}}{{end}}; started {{.Started.Format "2006-01-02 15:04:05 MST"}}; costs in {{.Currency}} from the price table below.</p>
<table>
<tr><th>mode</th><th>requests</th><th>errors</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>cold starts</th><th>cold p50</th><th>instance-s</th><th>busy</th><th>idle</th><th>cost</th><th>per 1k</th><th>idle cost</th></tr>
{{range .Rows}}<tr><td><span class="swatch" style="background:{{.Color}}"></span>{{.Mode}}</td><td>{{.Requests}}</td><td>{{.Errors}}</td><td>{{.P50}}</td><td>{{.P95}}</td><td>{{.P99}}</td><td>{{.Max}}</td><td>{{.Cold}}</td><td>{{if .Cold}}{{.ColdP50}}{{else}}-{{end}}</td><td>{{.InstanceSeconds}}</td><td>{{.Busy}}</td><td>{{.Idle}}</td><td>{{.Cost}}</td><td>{{.Per1K}}</td><td>{{.IdleCost}}</td></tr>
{{end}}</table>
{{range .Charts}}{{$c := .}}<svg class="chart" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{{.Title}}">
<text class="title" x="{{.Left}}" y="18">{{.Title}}</text>
<g transform="translate({{.Left}},{{.Top}})">
{{range .YTicks}}<line class="grid" x1="0" x2="{{$c.PlotW}}" y1="{{printf "%.1f" .Pos}}" y2="{{printf "%.1f" .Pos}}"/><text x="-6" y="{{printf "%.1f" .Pos}}" dy="4" text-anchor="end">{{.Label}}</text>
{{end}}{{range .XTicks}}<line class="grid" x1="{{printf "%.1f" .Pos}}" x2="{{printf "%.1f" .Pos}}" y1="0" y2="{{$c.PlotH}}"/><text x="{{printf "%.1f" .Pos}}" y="{{$c.PlotH}}" dy="16" text-anchor="middle">{{.Label}}</text>
{{end}}<line class="axis" x1="0" x2="0" y1="0" y2="{{.PlotH}}"/><line class="axis" x1="0" x2="{{.PlotW}}" y1="{{.PlotH}}" y2="{{.PlotH}}"/>
<text x="-6" y="-8" text-anchor="end">{{.Unit}}</text>
{{range .Lines}}<path class="series" data-mode="{{.Name}}" data-points="{{.Points}}" stroke="{{.Color}}" d="{{.D}}"/>
{{end}}{{range .Lines}}<g transform="translate({{$c.PlotW}},0)"><rect x="14" y="{{.LegendY}}" width="12" height="4" fill="{{.Color}}"/><text x="32" y="{{.LegendY}}" dy="6">{{.Name}}</text></g>
{{end}}</g>
</svg>
{{end}}<h2 style="font-size:15px">Price table</h2>
<p class="meta">serverless: {{num .Prices.Serverless.GBSecond}} per GB-second, {{num .Prices.Serverless.GPUSecond}} per GPU-second, {{num .Prices.Serverless.PerMillionRequests}} per million requests{{if .Prices.Serverless.BillStartup}}, start-up billed{{end}};
dedicated: {{num .Prices.Dedicated.VCPUHour}} per vCPU-hour, {{num .Prices.Dedicated.GBHour}} per GB-hour, {{num .Prices.Dedicated.GPUHour}} per GPU-hour;
instances without resources: {{num .Prices.Instance.CPU}} vCPU, {{.Prices.Instance.Memory}}.</p>
<script>
// Counts the chart lines the browser laid out with a length, for tests
// that open this page headless; it changes nothing on the page.
window.addEventListener("load", function () {
  var n = 0;
  document.querySelectorAll("path.series").forEach(function (p) {
    if (p.getTotalLength() > 0 && p.getBBox().width > 0) { n++; }
  });
  document.body.setAttribute("data-rendered-series", String(n));
});
</script>
</body>
</html>
`))
