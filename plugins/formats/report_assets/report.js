/* The interactive parts of a stillroom report: sortable tables, SVG charts drawn from the embedded data,
   and the per-sample drill-down. Everything the page needs is in this file and the JSON in #report-data;
   nothing is fetched. Charts measure their own tick labels before laying out, so no label is cut. */
"use strict";
var DATA = JSON.parse(document.getElementById("report-data").textContent);
var SVG = "http://www.w3.org/2000/svg";
var DASHES = ["none", "6 3", "2 3", "10 3 2 3"];  /* seeds of one entry: one colour, these patterns */
var COLOURS = ["#2874a6", "#c0392b", "#27ae60", "#d68910", "#7b3fa0", "#138d75", "#5d6d7e", "#a04000",
               "#1abc9c", "#e84393"];

function el(tag, attrs, text) {
  var node = tag.indexOf("svg:") === 0 ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

/* Compact SI numbers: 1750 -> "1.75k", 2.5e12 -> "2.5T", 0.125 -> "0.125". */
var UNITS = [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
function unitOf(magnitude) {
  for (var i = 0; i < UNITS.length; i++) if (magnitude >= UNITS[i][0]) return UNITS[i];
  return [1, ""];
}
function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "";
  var a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 1e-3) return v.toExponential(1);
  var unit = unitOf(a);
  return String(Number((v / unit[0]).toPrecision(3))) + unit[1];
}
/* Tick labels share one unit and just enough decimals to tell neighbouring ticks apart. */
function tickFormatter(ticks, step) {
  var unit = unitOf(Math.max.apply(null, ticks.map(Math.abs)));
  var decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step / unit[0]) + 1e-9)));
  if (unit[0] === 1 && step < 1e-3) return function (v) { return v === 0 ? "0" : v.toExponential(1); };
  return function (v) { return (v / unit[0]).toFixed(decimals) + (v === 0 ? "" : unit[1]); };
}

/* A rounded linear axis over [low, high]: steps of 1, 2, 2.5 or 5 times a power of ten. */
function linearAxis(low, high, count, integer) {
  count = count || 5;
  if (!(high > low)) { var pad = Math.abs(low) * 0.1 || 1; low -= pad; high += pad; }
  var power = Math.pow(10, Math.floor(Math.log10((high - low) / (count - 1))));
  var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * power; })
    .filter(function (s) { return s * (count - 1) >= high - low && (!integer || s >= 1); })[0];
  if (integer) step = Math.max(1, Math.round(step));
  low = Math.floor(low / step + 1e-9) * step;
  high = Math.ceil(high / step - 1e-9) * step;
  var ticks = [];
  for (var v = low; v <= high + step / 2; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  var label = tickFormatter(ticks, step);
  return {low: low, high: high, ticks: ticks, label: label,
          scale: function (x) { return (x - low) / (high - low); }};
}
function logAxis(low, high) {
  var a = Math.floor(Math.log10(low)), b = Math.ceil(Math.log10(high));
  if (b === a) b = a + 1;
  var ticks = [];
  for (var p = a; p <= b; p++) ticks.push(Math.pow(10, p));
  return {low: ticks[0], high: ticks[ticks.length - 1], ticks: ticks, label: fmt, log: true,
          scale: function (x) { return (Math.log10(x) - a) / (b - a); }};
}

/* A line or scatter chart. spec: {title, xLabel, yLabel, series: [{name, points: [[x, y]], colour, scatter}],
   logX, front: [[x, y]] (drawn dashed), width, height}. Returns a <figure>, or null when there is no point. */
function chart(spec) {
  var series = spec.series.map(function (s) {
    return Object.assign({}, s, {points: s.points.filter(function (p) {
      return isFinite(p[0]) && isFinite(p[1]) && p[0] !== null && p[1] !== null && (!spec.logX || p[0] > 0);
    })});
  }).filter(function (s) { return s.points.length > 0; });
  if (!series.length) return null;
  var xs = [], ys = [];
  series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
  if (spec.pad) {  /* scatter: keep markers off the frame */
    var dy = (y1 - y0) * 0.08 || Math.abs(y0) * 0.1 || 0.1;
    y0 -= dy; y1 += dy;
    if (!spec.logX) { var dx = (x1 - x0) * 0.08 || Math.abs(x0) * 0.1 || 1; x0 -= dx; x1 += dx; }
    else { x0 /= 1.3; x1 *= 1.3; }
  }
  var integerX = xs.every(function (x) { return Math.round(x) === x; });
  var xAxis = spec.logX ? logAxis(x0, x1) : linearAxis(x0, x1, 6, integerX);
  var yAxis = linearAxis(y0, y1, 5);
  var width = spec.width || 400, height = spec.height || 230, top = 10;
  var figure = el("figure", {"class": "chart-figure"});
  figure.appendChild(el("figcaption", {}, spec.title));
  var svg = el("svg:svg", {"class": "chart", width: width, height: height, viewBox: "0 0 " + width + " " + height,
                           role: "img", "aria-label": spec.title});
  figure.appendChild(svg);
  spec.mount.appendChild(figure);  // in the document, so labels can be measured
  function text(x, y, value, anchor, extra) {
    var node = el("svg:text", Object.assign({x: x, y: y, "text-anchor": anchor || "start"}, extra || {}), value);
    svg.appendChild(node);
    return node;
  }
  var yLabels = yAxis.ticks.map(function (t) { return text(0, 0, yAxis.label(t), "end", {"class": "tick y"}); });
  var xLabels = xAxis.ticks.map(function (t) { return text(0, 0, xAxis.label(t), "middle", {"class": "tick x"}); });
  var widest = Math.max.apply(null, yLabels.map(function (n) { return n.getBBox().width; }));
  var lastHalf = xLabels[xLabels.length - 1].getBBox().width / 2;
  var left = Math.ceil(widest) + 8 + (spec.yLabel ? 18 : 0);
  var right = Math.ceil(lastHalf) + 6, bottom = 22 + (spec.xLabel ? 16 : 0);
  var plotW = width - left - right, plotH = height - top - bottom;
  var X = function (v) { return left + xAxis.scale(v) * plotW; };
  var Y = function (v) { return top + (1 - yAxis.scale(v)) * plotH; };
  var grid = el("svg:g", {});
  svg.insertBefore(grid, svg.firstChild);
  yAxis.ticks.forEach(function (t, i) {
    grid.appendChild(el("svg:line", {"class": "grid", x1: left, x2: left + plotW, y1: Y(t), y2: Y(t)}));
    yLabels[i].setAttribute("x", left - 5);
    yLabels[i].setAttribute("y", Y(t) + 4);
  });
  xAxis.ticks.forEach(function (t, i) {
    grid.appendChild(el("svg:line", {"class": "grid", x1: X(t), x2: X(t), y1: top, y2: top + plotH}));
    xLabels[i].setAttribute("x", X(t));
    xLabels[i].setAttribute("y", top + plotH + 15);
  });
  grid.appendChild(el("svg:path", {"class": "axis", fill: "none",
                                   d: "M" + left + " " + top + "V" + (top + plotH) + "H" + (left + plotW)}));
  if (spec.xLabel) text(left + plotW / 2, height - 4, spec.xLabel, "middle", {"class": "axis-title"});
  if (spec.yLabel) {
    text(0, 0, spec.yLabel, "middle", {"class": "axis-title",
                                       transform: "translate(12 " + (top + plotH / 2) + ") rotate(-90)"});
  }
  if (spec.front && spec.front.length > 1) {
    svg.appendChild(el("svg:polyline", {"class": "front", points: spec.front.map(function (p) {
      return X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1);
    }).join(" ")}));
  }
  var legend = el("div", {"class": "legend"}), keys = [];
  series.forEach(function (s) { if (s.colourKey !== undefined && keys.indexOf(s.colourKey) < 0) keys.push(s.colourKey); });
  series.forEach(function (s, i) {
    var colour = s.colour || COLOURS[(s.colourKey !== undefined ? keys.indexOf(s.colourKey) : i) % COLOURS.length];
    var dash = DASHES[(s.dash || 0) % DASHES.length];
    var group = el("svg:g", {"class": "series", "data-name": s.name, "data-points": s.points.length});
    if (!s.scatter && s.points.length > 1) {
      group.appendChild(el("svg:polyline", {"class": "line", fill: "none", stroke: colour, "stroke-width": 1.6,
                                            "stroke-dasharray": dash, points: s.points.map(function (p) {
        return X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1);
      }).join(" ")}));
    }
    if (s.scatter || s.points.length <= 30) {
      s.points.forEach(function (p) {
        var dot = el("svg:circle", {cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: s.scatter ? 5 : 2.5,
                                    fill: colour, stroke: s.onFront ? "#b03a2e" : "none", "stroke-width": 2});
        dot.appendChild(el("svg:title", {}, s.name + ": " + fmt(p[0]) + ", " + fmt(p[1])));
        group.appendChild(dot);
      });
    }
    svg.appendChild(group);
    if (s.scatter && spec.labelPoints) {  /* name each point beside it, flipped to the left near the right edge */
      s.points.forEach(function (p) {
        var label = el("svg:text", {"class": "point-label", x: X(p[0]) + 8, y: Y(p[1]) + 4}, s.name);
        group.appendChild(label);
        if (label.getBBox().x + label.getBBox().width > width - 2) {
          label.setAttribute("x", X(p[0]) - 8);
          label.setAttribute("text-anchor", "end");
        }
      });
    }
    var key = el("span", {});
    key.appendChild(el("i", {style: dash === "none" ? "background:" + colour
                                                    : "border-top:3px dashed " + colour + ";height:0"}));
    key.appendChild(document.createTextNode(s.name + (s.onFront ? " (Pareto front)" : "")));
    legend.appendChild(key);
  });
  if (series.length > 1 || spec.legend) figure.appendChild(legend);
  return figure;
}

/* Horizontal stacked bars: spec {title, categories, series: [{name, values}]}; null when every value is 0. */
function stackedBars(spec) {
  var totals = spec.categories.map(function (_, i) {
    return spec.series.reduce(function (sum, s) { return sum + (s.values[i] || 0); }, 0);
  });
  if (!totals.some(function (t) { return t > 0; })) return null;
  var width = 460, bar = 18, gap = 8, top = 6;
  var height = top + spec.categories.length * (bar + gap) + 24;
  var figure = el("figure", {"class": "chart-figure"});
  figure.appendChild(el("figcaption", {}, spec.title));
  var svg = el("svg:svg", {"class": "chart", width: width, height: height, viewBox: "0 0 " + width + " " + height,
                           role: "img", "aria-label": spec.title});
  figure.appendChild(svg);
  spec.mount.appendChild(figure);
  var names = spec.categories.map(function (c) {
    var node = el("svg:text", {x: 0, y: 0, "text-anchor": "end"}, c);
    svg.appendChild(node);
    return node;
  });
  var left = Math.ceil(Math.max.apply(null, names.map(function (n) { return n.getBBox().width; }))) + 10;
  width = Math.max(width, left + 320);  /* long names widen the chart rather than squeeze its bars */
  svg.setAttribute("width", width);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  var axis = linearAxis(0, Math.max.apply(null, totals), 5);
  var ticks = axis.ticks.map(function (t) {
    var node = el("svg:text", {"text-anchor": "middle", "class": "tick x"}, axis.label(t));
    svg.appendChild(node);
    return node;
  });
  var right = Math.ceil(ticks[ticks.length - 1].getBBox().width / 2) + 6;
  var plotW = width - left - right, base = top + spec.categories.length * (bar + gap);
  axis.ticks.forEach(function (t, i) {
    var x = left + axis.scale(t) * plotW;
    svg.insertBefore(el("svg:line", {"class": "grid", x1: x, x2: x, y1: top, y2: base}), svg.firstChild);
    ticks[i].setAttribute("x", x);
    ticks[i].setAttribute("y", base + 14);
  });
  spec.categories.forEach(function (c, i) {
    var y = top + i * (bar + gap), x = left;
    names[i].setAttribute("x", left - 6);
    names[i].setAttribute("y", y + bar - 5);
    spec.series.forEach(function (s, j) {
      var w = axis.scale(s.values[i] || 0) * plotW;
      var rect = el("svg:rect", {"class": "bar", x: x, y: y, width: Math.max(w, 0), height: bar,
                                 fill: COLOURS[j % COLOURS.length]});
      rect.appendChild(el("svg:title", {}, c + ", " + s.name + ": " + fmt(s.values[i] || 0)));
      svg.appendChild(rect);
      x += w;
    });
  });
  var legend = el("div", {"class": "legend"});
  spec.series.forEach(function (s, j) {
    var key = el("span", {});
    key.appendChild(el("i", {style: "background:" + COLOURS[j % COLOURS.length]}));
    key.appendChild(document.createTextNode(s.name));
    legend.appendChild(key);
  });
  figure.appendChild(legend);
  return figure;
}

/* ---- sortable tables: click a header (or Enter on it); a second click reverses; empty cells stay last ---- */
function sortKey(cell) { return cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim(); }
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach(function (th, index) {
    function sort() {
      var ascending = th.getAttribute("aria-sort") !== "ascending", numeric = th.dataset.type === "num";
      heads.forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        var x = sortKey(a.cells[index]), y = sortKey(b.cells[index]);
        if (x === "" || y === "") return (x === "") - (y === "");
        var order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    }
    th.tabIndex = 0;
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (event) { if (event.key === "Enter") sort(); });
  });
});

/* ---- training curves: one chart per entry, seeds overlaid ---- */
(function () {
  var mount = document.getElementById("curves-charts");
  if (!mount) return;
  DATA.curves.forEach(function (group) {
    var figure = chart({mount: mount, title: group.title, xLabel: "step", yLabel: group.y_label || "loss",
                        series: group.series.map(function (s, i) {
                          return {name: s.name, points: s.points, colour: COLOURS[i % COLOURS.length]};
                        })});
    if (figure) figure.dataset.entry = group.entry;
  });
})();

/* ---- method dynamics ---- */
(function () {
  var mount = document.getElementById("dynamics-charts");
  if (!mount) return;
  DATA.dynamics.forEach(function (item) {
    if (item.kind === "bars") stackedBars(Object.assign({mount: mount}, item));
    else chart(Object.assign({mount: mount, legend: true}, item));  /* grouped fields: say which line is which */
  });
})();

/* ---- cost against quality, with the Pareto front (cheaper and better is up and to the left) ---- */
(function () {
  var mount = document.getElementById("cost-chart");
  if (!mount) return;
  var cost = DATA.cost, xSelect = document.getElementById("cost-x"), ySelect = document.getElementById("cost-y");
  function draw() {
    mount.textContent = "";
    var xKey = xSelect.value, metric = DATA.metrics.filter(function (m) { return m.key === ySelect.value; })[0];
    var points = cost.points.filter(function (p) { return p.x[xKey] > 0 && isFinite(p.y[metric.key]); });
    var better = function (a, b) { return metric.higher_is_better ? a > b : a < b; };
    var sorted = points.slice().sort(function (a, b) { return a.x[xKey] - b.x[xKey]; });
    var front = [], best = null;
    sorted.forEach(function (p) {
      if (best === null || better(p.y[metric.key], best)) { front.push(p); best = p.y[metric.key]; }
    });
    var xs = points.map(function (p) { return p.x[xKey]; });
    var logX = xs.length > 1 && Math.max.apply(null, xs) / Math.min.apply(null, xs) > 50;
    var axisName = cost.axes.filter(function (a) { return a.key === xKey; })[0].label;
    var figure = chart({mount: mount, title: metric.label + " against " + axisName, xLabel: axisName + (logX ? " (log scale)" : ""),
                        yLabel: metric.label, logX: logX, legend: true, width: 620, height: 320, pad: true,
                        labelPoints: true,
                        front: front.map(function (p) { return [p.x[xKey], p.y[metric.key]]; }),
                        series: points.map(function (p) {
                          return {name: p.entry, scatter: true, onFront: front.indexOf(p) >= 0,
                                  colour: COLOURS[DATA.entries.indexOf(p.entry) % COLOURS.length],
                                  points: [[p.x[xKey], p.y[metric.key]]]};
                        })});
    if (!figure) mount.appendChild(el("p", {"class": "muted"}, "No entry has both " + axisName + " and " + metric.label + "."));
  }
  xSelect.addEventListener("change", draw);
  ySelect.addEventListener("change", draw);
  draw();
})();

/* ---- per-sample drill-down ---- */
(function () {
  var root = document.getElementById("samples");
  if (!root || !DATA.samples.benchmarks.length) return;
  var pick = function (id) { return document.getElementById(id); };
  var entry = pick("drill-entry"), bench = pick("drill-benchmark"), seed = pick("drill-seed");
  var other = pick("drill-other"), only = pick("drill-disagree"), body = pick("drill-rows"), count = pick("drill-count");
  var PAGE = 200;
  function benchmark() { return DATA.samples.benchmarks.filter(function (b) { return b.key === bench.value; })[0]; }
  function seedsOf(b, name) { return Object.keys((b.predictions[name] || {})); }
  function answer(b, name, seedKey, index) {
    var bySeed = b.predictions[name] || {};
    var found = bySeed[seedKey] || bySeed[Object.keys(bySeed)[0]];
    return found ? found[index] : null;
  }
  function scoreText(a) { return a && a[1] !== null && a[1] !== undefined ? fmt(Number(a[1])) : ""; }
  function disagree(a, b) {
    if (!a || !b) return false;
    if (a[1] !== null && b[1] !== null && a[1] !== undefined && b[1] !== undefined) return Number(a[1]) !== Number(b[1]);
    return a[0] !== b[0];
  }
  function fillSeeds() {
    var keep = seed.value;
    seed.textContent = "";
    seedsOf(benchmark(), entry.value).forEach(function (s) { seed.appendChild(el("option", {value: s}, s)); });
    if (Array.from(seed.options).some(function (o) { return o.value === keep; })) seed.value = keep;
    pick("drill-seed-label").hidden = seed.options.length < 2;
  }
  function cell(row, value, cls) {
    var td = el("td", cls ? {"class": cls} : {});
    td.appendChild(el("pre", {}, value === null || value === undefined ? "" : String(value)));
    row.appendChild(td);
    return td;
  }
  function expand(row, b, index) {
    var next = row.nextSibling;
    if (next && next.classList.contains("detail")) { next.remove(); return; }
    var detail = el("tr", {"class": "detail"}), td = el("td", {colspan: 5}), table = el("table", {"class": "others"});
    table.appendChild(el("caption", {"class": "muted small"}, "Every entry's answer to item " + b.items[index].id));
    DATA.entries.forEach(function (name) {
      var a = answer(b, name, seed.value, index);
      if (!a) return;
      var tr = el("tr", {"data-entry": name});
      tr.appendChild(el("td", {}, name));
      var pre = el("td", {}); pre.appendChild(el("pre", {}, a[0])); tr.appendChild(pre);
      tr.appendChild(el("td", {"class": "num"}, scoreText(a)));
      table.appendChild(tr);
    });
    td.appendChild(table);
    detail.appendChild(td);
    row.after(detail);
  }
  function render() {
    var b = benchmark(), shown = 0, matching = 0;
    body.textContent = "";
    b.items.forEach(function (item, index) {
      var mine = answer(b, entry.value, seed.value, index);
      if (!mine) return;
      if (only.checked && !disagree(mine, answer(b, other.value, seed.value, index))) return;
      matching += 1;
      if (shown >= PAGE) return;
      shown += 1;
      var row = el("tr", {"class": "item", "data-id": item.id, "data-index": index});
      cell(row, item.id);
      cell(row, item.prompt);
      cell(row, item.reference);
      cell(row, mine[0], "prediction");
      var score = el("td", {"class": "num score" + (mine[1] === 1 || mine[1] === true ? " score-1" : mine[1] === 0 || mine[1] === false ? " score-0" : "")},
                     scoreText(mine));
      row.appendChild(score);
      row.addEventListener("click", function () { expand(row, b, index); });
      body.appendChild(row);
    });
    count.textContent = matching + " item" + (matching === 1 ? "" : "s") + (shown < matching ? ", first " + shown + " shown" : "") +
      (b.truncated ? "; the report keeps the first " + b.items.length + " of " + b.total + " items of this benchmark" : "");
  }
  [entry, bench].forEach(function (s) { s.addEventListener("change", function () { fillSeeds(); render(); }); });
  [seed, other, only].forEach(function (s) { s.addEventListener("change", render); });
  fillSeeds();
  render();
})();

window.reportReady = performance.now();
