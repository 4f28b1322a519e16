// tandem dashboard: polls /ui/api/overview every second and draws it with
// uPlot. window.tandemDashboard exposes what the page shows, for tests.
(function () {
  "use strict";

  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
  var stateColors = { ready: "#2ca02c", starting: "#ff7f0e", draining: "#9467bd" };
  var path = location.pathname;
  var name = null;
  var m = path.match(/^\/ui\/d\/([^\/]+)$/);
  if (m) { name = decodeURIComponent(m[1]); }

  var charts = {};
  var hook = { updates: 0, overview: null, page: name ? "deployment" : "overview", chart: chartData, errors: 0 };
  window.tandemDashboard = hook;

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") { e.textContent = attrs[k]; } else { e.setAttribute(k, attrs[k]); }
    }
    (children || []).forEach(function (c) { if (c) { e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return e;
  }

  function fmtMS(v) {
    if (v === null || v === undefined) { return "–"; }
    if (v >= 1000) { return (v / 1000).toFixed(2) + " s"; }
    if (v >= 10) { return v.toFixed(0) + " ms"; }
    return v.toFixed(1) + " ms";
  }
  // fmtSmall writes a small amount with the digits its size needs, never
  // an exponent: 0.000012, 0.5, 12.25.
  function fmtSmall(v) {
    var a = Math.abs(v);
    if (a === 0) { return "0"; }
    if (a >= 1) { return v.toLocaleString("en-US", { maximumFractionDigits: 2 }); }
    return v.toFixed(Math.min(20, 1 - Math.floor(Math.log10(a)))).replace(/0+$/, "").replace(/\.$/, "");
  }
  function fmtRate(v) { return v >= 10 ? v.toFixed(0) + "/s" : v.toFixed(1) + "/s"; }
  function fmtTime(t) { return new Date(t).toLocaleTimeString(); }

  // chartData returns what a chart draws: its series labels and data.
  function chartData(key) {
    var c = charts[key];
    if (!c) { return null; }
    return { labels: c.series.map(function (s) { return s.label; }), data: c.data };
  }

  // chart draws data into the element with id key, making the uPlot
  // instance once and feeding it new data after; series: [{label, stroke}].
  function chart(key, title, series, data, opts) {
    var holder = document.getElementById(key);
    if (!holder) { return; }
    var sig = series.map(function (s) { return s.label; }).join("|");
    var c = charts[key];
    if (c && c.sig === sig && c.holder === holder) {
      c.u.setData(data);
      c.data = data;
      holder.setAttribute("data-points", String(data[0].length));
      return;
    }
    if (c) { c.u.destroy(); }
    holder.textContent = "";
    holder.appendChild(el("h3", { text: title }));
    var width = Math.max(holder.clientWidth - 16, 300);
    var u = new uPlot({
      width: width, height: 220,
      scales: { x: { time: true }, y: { range: function (u, lo, hi) { return [0, Math.max(hi * 1.1, (opts && opts.minTop) || 1)]; } } },
      axes: [{}, { size: (opts && opts.size) || 60, values: opts && opts.fmt ? function (u, vals) { return vals.map(opts.fmt); } : undefined }],
      series: [{}].concat(series.map(function (s) {
        return { label: s.label, stroke: s.stroke, width: 2, spanGaps: false, paths: s.step ? uPlot.paths.stepped({ align: 1 }) : undefined,
          value: opts && opts.fmt ? function (u, v) { return v === null ? "–" : opts.fmt(v); } : undefined };
      })),
      legend: { live: true }
    }, data, holder);
    charts[key] = { u: u, sig: sig, holder: holder, data: data, series: series };
    holder.setAttribute("data-points", String(data[0].length));
  }

  function money(c, mode) { return c ? (mode ? (c.as_text[mode] || "–") : c.text) : "–"; }

  function renderOverview(o) {
    var main = document.getElementById("main");
    var rows = o.deployments.map(function (d) {
      return el("tr", { "data-deployment": d.name }, [
        el("td", {}, [el("a", { href: "/ui/d/" + encodeURIComponent(d.name), text: d.name })]),
        el("td", {}, [el("span", { "class": "mode " + d.mode, text: d.mode })]),
        el("td", { text: d.backend }),
        el("td", { text: d.revision }),
        el("td", { text: d.traffic.map(function (t) { return t.revision + " " + t.percent + "%"; }).join(", ") }),
        el("td", { "class": "num", "data-field": "ready", text: String(d.ready) }),
        el("td", { "class": "num", "data-field": "starting", text: String(d.starting) }),
        el("td", { "class": "num", "data-field": "desired", text: String(d.desired) }),
        el("td", { "class": "num", "data-field": "in_flight", text: String(d.in_flight) }),
        el("td", { "class": "num", "data-field": "queued", text: String(d.queued) }),
        el("td", { "class": "num", "data-field": "rate", text: fmtRate(d.rate) }),
        el("td", { "class": "num", text: fmtMS(d.p50_ms) }),
        el("td", { "class": "num", text: fmtMS(d.p99_ms) }),
        el("td", { "class": "num", "data-field": "cold_starts", text: String(d.cold_starts) }),
        el("td", { "class": "num", "data-field": "cost", text: money(d.cost) }),
        el("td", { "class": "num", "data-field": "as_serverless", text: money(d.cost, "serverless") }),
        el("td", { "class": "num", "data-field": "as_dedicated", text: money(d.cost, "dedicated") })
      ]);
    });
    var head = el("tr", {}, ["deployment", "mode", "backend", "revision", "traffic", "ready", "starting", "desired", "in flight",
      "queue", "requests", "p50", "p99", "cold starts", "cost (24h)", "as serverless", "as dedicated"].map(function (h) { return el("th", { text: h }); }));
    var table = o.deployments.length ? el("table", { id: "deployments" }, [head].concat(rows))
      : el("div", { "class": "empty", id: "deployments", text: "No deployments. tandem deploy -f manifest.yaml adds one." });
    var old = document.getElementById("deployments");
    if (old) { old.replaceWith(table); } else {
      main.appendChild(el("h2", { text: "Deployments" }));
      main.appendChild(el("div", { "class": "scroll", id: "table-box" }, [table]));
      main.appendChild(el("h2", { text: "Over the last minutes" }));
      main.appendChild(el("div", { "class": "charts" }, [
        el("div", { "class": "chart", id: "instances" }), el("div", { "class": "chart", id: "rate" }),
        el("div", { "class": "chart", id: "latency" }), el("div", { "class": "chart", id: "cost" })]));
      main.appendChild(el("h2", { text: "Recent events" }));
      main.appendChild(el("div", { "class": "events", id: "events" }));
    }
    var xs = o.deployments.length ? o.deployments[0].series.t : [];
    var per = function (f) { return [xs].concat(o.deployments.map(function (d) { return d.series[f]; })); };
    var ser = o.deployments.map(function (d, i) { return { label: d.name, stroke: palette[i % palette.length], step: true }; });
    var inst = [xs].concat(o.deployments.map(function (d) {
      return d.series.ready.map(function (v, i) { return v === null ? null : v + d.series.starting[i]; });
    }));
    chart("instances", "Instances (ready + starting)", ser, inst);
    chart("rate", "Requests per second", ser.map(function (s) { return { label: s.label, stroke: s.stroke }; }), per("rate"), { fmt: fmtSmall });
    chart("latency", "p99 latency (ms)", ser.map(function (s) { return { label: s.label, stroke: s.stroke }; }), per("p99_ms"), { fmt: fmtSmall });
    chart("cost", "Cost over the last 24 h (" + (o.currency || "") + ")", ser.map(function (s) { return { label: s.label, stroke: s.stroke }; }), per("cost"), { minTop: 1e-6, fmt: fmtSmall, size: 84 });
    renderEvents(o.events, true);
  }

  function card(k, v, s, field) {
    return el("div", { "class": "card" }, [el("div", { "class": "k", text: k }), el("div", { "class": "v", "data-field": field || "", text: v }), s ? el("div", { "class": "s", text: s }) : null]);
  }

  function renderDeployment(o) {
    var main = document.getElementById("main");
    var d = o.deployments[0];
    document.getElementById("crumb").textContent = "/ " + name;
    if (!d) {
      main.textContent = "";
      main.appendChild(el("div", { "class": "empty", id: "missing", text: "No deployment named " + name + " (deleted, or not deployed yet)." }));
      renderEventsInto(main, o.events);
      return;
    }
    if (document.getElementById("missing")) { main.textContent = ""; }
    var cards = el("div", { "class": "cards", id: "cards" }, [
      card("mode", d.mode, "backend " + d.backend, "mode"),
      card("revision", d.revision, d.traffic.map(function (t) { return t.percent + "% of traffic"; }).join(", "), "revision"),
      card("instances", d.ready + " ready", d.starting + " starting, " + d.draining + " draining, " + d.desired + " desired" + (d.reason ? " — " + d.reason : ""), "ready"),
      card("in flight / queue", d.in_flight + " / " + d.queued, null, "queued"),
      card("requests", fmtRate(d.rate), d.requests + " since start", "rate"),
      card("latency p50 / p99", fmtMS(d.p50_ms) + " / " + fmtMS(d.p99_ms), "last " + 5 + " s", "latency"),
      card("cold starts", String(d.cold_starts), d.restarts + " restarts", "cold_starts"),
      card("cost (24 h)", money(d.cost), d.cost ? "as serverless " + money(d.cost, "serverless") + ", as dedicated " + money(d.cost, "dedicated") : null, "cost")
    ]);
    var phases = Object.keys(d.phases_ms).sort();
    var ptable = phases.length ? el("table", { "class": "phases", id: "phases" }, [el("tr", {}, [el("th", { text: "start phase" }), el("th", { text: "mean" })])].concat(
      phases.map(function (p) { return el("tr", {}, [el("td", { text: p }), el("td", { text: fmtMS(d.phases_ms[p]) })]); })))
      : el("div", { "class": "empty", id: "phases", text: "No instance has started yet." });
    var old = document.getElementById("cards");
    if (old) {
      old.replaceWith(cards);
      document.getElementById("phases").replaceWith(ptable);
    } else {
      main.appendChild(cards);
      main.appendChild(el("h2", { text: "Over the last minutes" }));
      main.appendChild(el("div", { "class": "charts" }, [
        el("div", { "class": "chart", id: "instances" }), el("div", { "class": "chart", id: "rate" }),
        el("div", { "class": "chart", id: "latency" }), el("div", { "class": "chart", id: "cost" })]));
      main.appendChild(el("h2", { text: "Cold starts by phase" }));
      main.appendChild(ptable);
      main.appendChild(el("h2", { text: "Recent events" }));
      main.appendChild(el("div", { "class": "events", id: "events" }));
    }
    var s = d.series;
    chart("instances", "Instances by state", [
      { label: "ready", stroke: stateColors.ready, step: true }, { label: "starting", stroke: stateColors.starting, step: true },
      { label: "draining", stroke: stateColors.draining, step: true }], [s.t, s.ready, s.starting, s.draining]);
    chart("rate", "Requests per second and queue", [{ label: "requests/s", stroke: "#1f77b4" }, { label: "queued", stroke: "#8c564b", step: true }],
      [s.t, s.rate, s.queued], { fmt: fmtSmall });
    chart("latency", "Latency (ms)", [{ label: "p50", stroke: "#1f77b4" }, { label: "p99", stroke: "#d62728" }], [s.t, s.p50_ms, s.p99_ms], { fmt: fmtSmall });
    chart("cost", "Cost over the last 24 h (" + (o.currency || "") + ")", [{ label: d.mode, stroke: "#1f77b4" }], [s.t, s.cost], { minTop: 1e-6, fmt: fmtSmall, size: 84 });
    renderEvents(o.events, false);
  }

  function renderEventsInto(main, evs) {
    if (!document.getElementById("events")) { main.appendChild(el("div", { "class": "events", id: "events" })); }
    renderEvents(evs, true);
  }

  function renderEvents(evs, withName) {
    var box = document.getElementById("events");
    box.textContent = "";
    if (!evs.length) { box.appendChild(el("div", { "class": "empty", text: "Nothing yet: events appear as deployments change." })); return; }
    evs.forEach(function (e) {
      box.appendChild(el("div", { "class": "event", "data-kind": e.kind }, [
        el("span", { "class": "when", text: fmtTime(e.at) }),
        withName ? el("a", { href: "/ui/d/" + encodeURIComponent(e.deployment), text: e.deployment }) : el("span", { text: e.deployment }),
        el("span", { "class": "kind " + e.kind, text: e.kind.replace("_", " ") }),
        el("span", { text: e.message })]));
    });
  }

  var status = document.getElementById("status");
  function poll() {
    var url = "/ui/api/overview" + (name ? "?d=" + encodeURIComponent(name) : "");
    fetch(url, { cache: "no-store", credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    }).then(function (o) {
      if (name) { renderDeployment(o); } else { renderOverview(o); }
      hook.overview = o;
      hook.updates++;
      status.textContent = "updated " + fmtTime(o.at || Date.now());
      status.className = "status";
    }, function (err) {
      hook.errors++;
      status.textContent = "not updating: " + err.message;
      status.className = "status stale";
    }).then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
