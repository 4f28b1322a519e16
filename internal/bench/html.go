package bench

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strconv"

	"tandem/internal/manifest"
	"tandem/internal/uplot"
)

// WriteHTML writes the report as one self-contained HTML page: the summary
// table and charts of instances, latency and cumulative cost over time for
// each mode, drawn by uPlot, which the page carries inline. It loads
// nothing from anywhere.
func WriteHTML(w io.Writer, r *Report) error {
	page := htmlPage{Report: r, Title: fmt.Sprintf("tandem bench: %s, %s", r.Model, r.Pattern), UPlotJS: uplot.InlineJS(), UPlotCSS: uplot.InlineCSS()}
	for _, m := range r.Modes {
		page.Rows = append(page.Rows, htmlRow{
			Mode: string(m.Mode), Color: colorOf(m.Mode, r), Requests: m.Requests, Errors: m.Errors,
			P50: fmtMS(m.Latency.P50), P95: fmtMS(m.Latency.P95), P99: fmtMS(m.Latency.P99), Max: fmtMS(m.Latency.Max),
			Cold: m.ColdStarts, ColdP50: fmtMS(m.ColdLatency.P50),
			InstanceSeconds: Seconds(m.InstanceSeconds), Busy: Seconds(m.ByState.Busy), Idle: Seconds(m.ByState.Idle),
			Cost: money(m.CostTotal, r.Currency), Per1K: money(m.CostPer1K, r.Currency), IdleCost: money(m.CostIdle, r.Currency),
		})
	}
	inst := Chart{ID: "instances", Title: "Instances (ready and starting)", Unit: "instances", Step: true}
	lat := Chart{ID: "latency", Title: "p99 latency of the requests sent in each interval", Unit: "ms", Log: true}
	cst := Chart{ID: "cost", Title: "Cumulative cost", Unit: r.Currency}
	for _, m := range r.Modes {
		c := colorOf(m.Mode, r)
		s := ChartSeries{Mode: string(m.Mode), Color: c}
		for _, p := range m.Series.Instances {
			s.Points = append(s.Points, [2]float64{p.T, float64(p.Ready + p.Starting)})
		}
		inst.Series = append(inst.Series, s)
		s = ChartSeries{Mode: string(m.Mode), Color: c}
		for _, p := range m.Series.Latency {
			if p.Requests > p.Errors && p.P99 > 0 {
				s.Points = append(s.Points, [2]float64{p.T, p.P99})
			}
		}
		lat.Series = append(lat.Series, s)
		s = ChartSeries{Mode: string(m.Mode), Color: c}
		for _, p := range m.Series.Instances {
			s.Points = append(s.Points, [2]float64{p.T, p.Cost})
		}
		cst.Series = append(cst.Series, s)
	}
	charts, err := json.Marshal([]Chart{inst, lat, cst})
	if err != nil {
		return err
	}
	page.Charts = template.JS(charts)
	return pageTemplate.Execute(w, page)
}

// Chart is one chart of the HTML report as the page's script reads it
// (the JSON in <script id="charts">).
type Chart struct {
	ID     string        `json:"id"`
	Title  string        `json:"title"`
	Unit   string        `json:"unit"`
	Step   bool          `json:"step,omitempty"` // a count that holds until it changes
	Log    bool          `json:"log,omitempty"`  // a logarithmic y axis
	Series []ChartSeries `json:"series"`
}

// ChartSeries is one mode's line in a Chart: points of (seconds since the
// mode's start, value).
type ChartSeries struct {
	Mode   string       `json:"mode"`
	Color  string       `json:"color"`
	Points [][2]float64 `json:"points"`
}

type htmlPage struct {
	*Report
	Title    string
	Rows     []htmlRow
	Charts   template.JS
	UPlotJS  template.JS
	UPlotCSS template.CSS
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

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{"num": func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>{{.UPlotCSS}}</style>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; }
p.meta { color: #555; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 24px; font-size: 13px; }
th, td { padding: 4px 7px; text-align: right; border-bottom: 1px solid #ddd; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px; }
.chart { margin: 0 0 20px; }
.chart h3 { font-size: 13px; margin: 0 0 4px; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="meta">{{.Requests}} requests over {{printf "%.1f" .Duration}} s per mode{{if .Manifest}}, manifest {{.Manifest}}{{end}}; started {{.Started.Format "2006-01-02 15:04:05 MST"}}; costs in {{.Currency}} from the price table below.</p>
<table>
<tr><th>mode</th><th>requests</th><th>errors</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>cold starts</th><th>cold p50</th><th>instance-s</th><th>busy</th><th>idle</th><th>cost</th><th>per 1k</th><th>idle cost</th></tr>
{{range .Rows}}<tr><td><span class="swatch" style="background:{{.Color}}"></span>{{.Mode}}</td><td>{{.Requests}}</td><td>{{.Errors}}</td><td>{{.P50}}</td><td>{{.P95}}</td><td>{{.P99}}</td><td>{{.Max}}</td><td>{{.Cold}}</td><td>{{if .Cold}}{{.ColdP50}}{{else}}-{{end}}</td><td>{{.InstanceSeconds}}</td><td>{{.Busy}}</td><td>{{.Idle}}</td><td>{{.Cost}}</td><td>{{.Per1K}}</td><td>{{.IdleCost}}</td></tr>
{{end}}</table>
<div id="charts"></div>
<h2>Price table</h2>
<p class="meta">serverless: {{num .Prices.Serverless.GBSecond}} per GB-second, {{num .Prices.Serverless.GPUSecond}} per GPU-second, {{num .Prices.Serverless.PerMillionRequests}} per million requests{{if .Prices.Serverless.BillStartup}}, start-up billed{{end}};
dedicated: {{num .Prices.Dedicated.VCPUHour}} per vCPU-hour, {{num .Prices.Dedicated.GBHour}} per GB-hour, {{num .Prices.Dedicated.GPUHour}} per GPU-hour;
instances without resources: {{num .Prices.Instance.CPU}} vCPU, {{.Prices.Instance.Memory}}.</p>
<script>{{.UPlotJS}}</script>
<script>
var charts = {{.Charts}};
// Draws each chart with uPlot; the modes' samples fall at different times,
// so their x values are joined (uPlot.join) and each line spans the gaps.
// data-rendered-series on <body> counts the lines uPlot drew (its
// drawSeries hook) that have at least one point, for tests that open this
// page headless.
(function () {
  var holder = document.getElementById("charts");
  var drawn = {};
  document.body.setAttribute("data-rendered-series", "0");
  function fmtDur(s) {
    if (s >= 60) { return Math.floor(s / 60) + "m" + (s % 60 ? Math.round(s % 60) + "s" : ""); }
    return (Math.round(s * 100) / 100) + "s";
  }
  // fmtVal writes an axis value with the digits its size needs, never an
  // exponent: 0.0000025, 12.5, 1,000.
  function fmtVal(v) {
    var a = Math.abs(v);
    if (v === null) { return ""; }
    if (a === 0) { return "0"; }
    if (a >= 1) { return v.toLocaleString("en-US", { maximumFractionDigits: 2 }); }
    return v.toFixed(Math.min(20, 1 - Math.floor(Math.log10(a)))).replace(/0+$/, "").replace(/\.$/, "");
  }
  charts.forEach(function (c) {
    var box = document.createElement("div");
    box.className = "chart";
    box.setAttribute("data-chart", c.id);
    var h = document.createElement("h3");
    h.textContent = c.title + " (" + c.unit + ")";
    box.appendChild(h);
    holder.appendChild(box);
    var tables = c.series.map(function (s) {
      var pts = s.points || [];
      return [pts.map(function (p) { return p[0]; }), pts.map(function (p) { return p[1]; })];
    });
    var data = uPlot.join(tables);
    var opts = {
      width: 860, height: 280,
      scales: { x: { time: false }, y: c.log ? { distr: 3 } : { range: function (u, lo, hi) { return [0, hi > 0 ? hi * 1.1 : 1]; } } },
      axes: [{ values: function (u, vals) { return vals.map(fmtDur); } }, { size: 80, values: function (u, vals) { return vals.map(fmtVal); } }],
      series: [{ label: "time", value: function (u, v) { return v === null ? "-" : fmtDur(v); } }].concat(c.series.map(function (s) {
        return { label: s.mode, stroke: s.color, width: 2, spanGaps: true, points: { show: (s.points || []).length < 3 },
          paths: c.step ? uPlot.paths.stepped({ align: 1 }) : undefined };
      })),
      hooks: { drawSeries: [function (u, si) {
        // uPlot drew series si: count it once if it has a point to draw.
        var key = c.id + "/" + si;
        if (!drawn[key] && u.data[si].some(function (v) { return v !== null && v !== undefined; })) {
          drawn[key] = true;
          document.body.setAttribute("data-rendered-series", String(Object.keys(drawn).length));
        }
      }] }
    };
    new uPlot(opts, data, box);
  });
})();
</script>
</body>
</html>
`))
