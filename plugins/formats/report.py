"""The HTML report: one self-contained page (inline CSS, JS, SVG and data; nothing is fetched, works from file://).

Sections, each omitted when it has nothing to show:

- the leaderboard pivoted by ``leaderboard.pivot``: one row per model entry, per benchmark metric the value
  with its 95% interval (and per-seed values), the verdict against the run's reference with its p-value, and
  the budget the entry consumed; sortable by any header;
- a verdict matrix per run and metric from ``leaderboard.pairwise``: every pair, difference and p-value,
  coloured where p < 0.05;
- training curves: loss against optimizer step per entry, seeds overlaid, from each training stage's
  ``log_history.jsonl`` (``log_history.json`` or a ``losses`` list as fallbacks);
- cost against quality: each entry as a point (FLOPs, tokens or calls against a metric), Pareto front marked;
- per-sample drill-down from each evaluation's ``samples.jsonl``: prompt, reference, prediction and score, the
  other entries' answers to the same item, and a filter to items where two entries disagree;
- method dynamics: per-iteration fields (lion's ``dynamics.json``, or ``models.extra["iterations"]``, or
  ``iteration/<k>/<name>`` results) and the pseudo-target mix of stages that record ``student_steps``;
- lineage.

Charts are drawn in the browser by ``report_assets/report.js`` from the JSON embedded in the page, so they can
measure their labels; ``report_data`` reads what the run folders hold. This module formats; it writes nothing.
"""

from __future__ import annotations

import json
import math
import time
from html import escape
from importlib import resources
from typing import Any

from stillroom.plugins.formats.report_data import ITERATION_PREFIX, SAMPLE_CAP, method_dynamics, number, sample_view, training_curves

BUDGET = [("optimizer_steps", "steps"), ("train_sequences", "sequences"), ("train_tokens", "train tokens"),
          ("teacher_forward_tokens", "teacher fwd tokens"), ("teacher_calls", "teacher calls"),
          ("teacher_calls_paid", "paid calls"), ("teacher_tokens", "teacher tokens"),
          ("student_generated_tokens", "generated tokens"), ("flops_estimate", "FLOPs"),
          ("wall_seconds", "wall s"), ("cost", "cost $")]
COST_AXES = ("flops_estimate", "teacher_tokens", "teacher_forward_tokens", "train_tokens", "teacher_calls",
             "wall_seconds", "cost")


def compact(value: Any) -> str:
    """Numbers as people read them in a table: 1750 -> 1.75k, 2.4e12 -> 2.4T, 0.1234 -> 0.123."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "" if value is None else str(value)
    size = abs(value)
    if size == 0:
        return "0"
    if size < 1e-3:
        return f"{value:.1e}"
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _data_attr(value: Any) -> str:
    return "" if value is None else escape(str(value))


# ---- entries ------------------------------------------------------------------------------------------------

def entry_names(entries: list[dict[str, Any]]) -> list[str]:
    """A unique display name per entry: its label when every entry comes from one run (the title names the run),
    else the model name, with the run id when one name appears in several runs."""
    labels = [e.get("entry") or e["model"] for e in entries]
    if len({e["run_id"] for e in entries}) == 1 and len(set(labels)) == len(labels):
        return labels
    models = [e["model"] for e in entries]
    return [m if models.count(m) == 1 else f"{m} ({e['run_id']})" for m, e in zip(models, entries)]


def metric_columns(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The benchmark metrics of the pivot, titled as the terminal leaderboard titles them."""
    from stillroom.leaderboard import metric_title

    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        for key, cell in entry["metrics"].items():
            if not str(cell.get("metric", "")).startswith(ITERATION_PREFIX):
                higher = cell.get("higher_is_better")  # SQLite keeps it as 0/1; unknown counts as higher
                found.setdefault(key, {"key": key, "label": metric_title(key),
                                       "higher_is_better": True if higher is None else bool(higher)})
    return list(found.values())


# ---- HTML ------------------------------------------------------------------------------------------------------

def _interval(cell: dict[str, Any]) -> str:
    low, high = cell.get("ci_low"), cell.get("ci_high")
    return f'<span class="ci">[{compact(low)}, {compact(high)}]</span>' if low is not None and high is not None else ""


def _verdict_cell(entry: dict[str, Any], cell: dict[str, Any] | None) -> str:
    if cell is None:
        return '<td class="num"></td>'
    if entry.get("is_reference"):
        return '<td class="num verdict-reference" data-value="0">reference</td>'
    verdict, diff, p = cell.get("verdict"), cell.get("diff_vs_reference"), cell.get("p_value")
    if verdict is None and diff is None:
        return '<td class="num"></td>'
    css = {"better": "verdict-better", "worse": "verdict-worse"}.get(verdict or "", "")
    shown = {"no difference detected": "no difference"}.get(verdict or "", verdict or "")
    sign = "+" if (diff or 0) > 0 else ""
    p_text = f" p={p:.2g}" if p is not None else ""
    low, high = cell.get("diff_ci_low"), cell.get("diff_ci_high")
    title = f"{verdict or ''}: difference {compact(diff)}" + (f" [{compact(low)}, {compact(high)}]" if low is not None
                                                               and high is not None else "") + p_text
    return (f'<td class="num verdict {css}" data-value="{_data_attr(diff)}" title="{escape(title)}">{escape(shown)}'
            f'<span class="seeds">{sign}{compact(diff)}{p_text}</span></td>')


def pivot_table(entries: list[dict[str, Any]], names: list[str], metrics: list[dict[str, Any]]) -> str:
    # a column no entry measured, or that is zero for every entry, says nothing at a glance: left out (and named)
    budget = [(key, label) for key, label in BUDGET if any(number(e.get(key)) for e in entries)]
    zero = [label for key, label in BUDGET if (key, label) not in budget
            and any(number(e.get(key)) is not None for e in entries)]
    heads = ['<th data-type="text">entry</th>', '<th data-type="text">method</th>', '<th data-type="text">seeds</th>']
    for metric in metrics:
        arrow = "higher is better" if metric["higher_is_better"] else "lower is better"
        heads.append(f'<th class="num" data-type="num" data-metric="{escape(metric["key"])}" title="{arrow}">'
                     f'{escape(metric["label"])}</th>')
        heads.append('<th class="num" data-type="num" title="difference from the reference, Holm-corrected p-value">'
                     'vs reference</th>')
    heads += [f'<th class="num" data-type="num" data-budget="{key}">{escape(label)}</th>' for key, label in budget]
    body = []
    for entry, name in zip(entries, names):
        seeds = entry.get("seeds") or []
        cells = [f'<td data-value="{escape(name)}">{escape(name)}</td>',
                 f'<td>{escape(entry.get("method") or entry.get("role") or "")}</td>',
                 f'<td>{escape(", ".join(map(str, seeds)))}</td>']
        for metric in metrics:
            cell = entry["metrics"].get(metric["key"])
            if cell is None:
                cells += ['<td class="num"></td>', '<td class="num"></td>']
                continue
            per_seed = cell.get("per_seed") or {}
            seeds_text = ("seeds: " + " ".join(compact(v) for v in per_seed.values())) if len(per_seed) > 1 else ""
            cells.append(f'<td class="num" data-value="{_data_attr(cell.get("value"))}">{compact(cell.get("value"))} '
                         f'{_interval(cell)}<span class="seeds">{escape(seeds_text)}</span></td>')
            cells.append(_verdict_cell(entry, cell))
        cells += [f'<td class="num" data-value="{_data_attr(number(entry.get(key)))}">{compact(number(entry.get(key)))}'
                  f'</td>' for key, _ in budget]
        body.append(f'<tr data-entry="{escape(name)}">' + "".join(cells) + "</tr>")
    note = f'<p class="muted small">Zero for every entry: {escape(", ".join(zero))}.</p>' if zero else ""
    return (f'<div class="scroll"><table id="pivot" class="sortable"><thead><tr>{"".join(heads)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{note}')


def verdict_matrices(pairs: list[dict[str, Any]], entries: list[dict[str, Any]], names: list[str],
                     metrics: list[dict[str, Any]]) -> str:
    """One table per run and metric: row A, column B, cell = A - B and its (uncorrected) p-value."""
    display = {(e["run_id"], e["model"]): n for e, n in zip(entries, names)}
    higher = {m["key"]: m["higher_is_better"] for m in metrics}
    labels = {m["key"]: m["label"] for m in metrics}
    grouped: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
    for pair in pairs:
        cells = grouped.setdefault((pair["run_id"], pair["key"]), {})
        cells[pair["a"], pair["b"]] = pair
        cells[pair["b"], pair["a"]] = {**pair, "difference": -pair["difference"]}
    out = []
    for (run_id, key), cells in sorted(grouped.items(), key=lambda item: (item[0][0], list(higher).index(item[0][1])
                                                                            if item[0][1] in higher else 99)):
        compared = {a for a, _ in cells}
        models = [e["model"] for e in entries if e["run_id"] == run_id and e["model"] in compared]
        heads = "".join(f"<th>{escape(display[run_id, m])}</th>" for m in models)
        rows = []
        for a in models:
            tds = []
            for b in models:
                pair = cells.get((a, b))
                if a == b or pair is None:
                    tds.append('<td class="self">&mdash;</td>' if a == b else "<td></td>")
                    continue
                diff, p = pair["difference"], pair.get("p_value")
                good = diff > 0 if higher.get(key, True) else diff < 0
                css = "sig-none" if p is None or p >= 0.05 or diff == 0 else ("sig-pos" if good else "sig-neg")
                p_text = f"p={p:.2g}" if p is not None else ""
                tds.append(f'<td class="{css}" data-a="{escape(a)}" data-b="{escape(b)}" data-p="{_data_attr(p)}" '
                           f'title="{escape(display[run_id, a])} - {escape(display[run_id, b])}">'
                           f'{"+" if diff > 0 else ""}{compact(diff)}<br><span class="muted">{p_text}</span></td>')
            rows.append(f"<tr><th>{escape(display[run_id, a])}</th>{''.join(tds)}</tr>")
        caption = f"{escape(labels.get(key, key))}" + (f" &middot; run {escape(run_id)}" if len({r for r, _ in grouped}) > 1 else "")
        out.append(f'<figure><figcaption>{caption}</figcaption><table class="matrix" data-key="{escape(key)}">'
                   f'<thead><tr><th>A \\ B</th>{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table></figure>')
    return "".join(out)


def lineage(rows: list[dict[str, Any]]) -> str:
    """Each model's run, method, teacher (kind and model; the whole identity on hover), data and spec."""
    seen, body = set(), []
    for row in rows:
        if (row["run_id"], row["model"]) in seen:
            continue
        seen.add((row["run_id"], row["model"]))
        data, teacher = row.get("data") or {}, row.get("teacher") or {}
        short = " ".join(str(teacher[k]) for k in ("kind", "model") if teacher.get(k)) if isinstance(teacher, dict) \
            else str(teacher)
        cells = [escape(str(c)) for c in (row["model"], row["run_id"], row.get("method") or row.get("role"))]
        cells.append(f'<span title="{escape(json.dumps(teacher, sort_keys=True, default=str))}">{escape(short)}</span>'
                     if teacher else "")
        cells += [escape(str(c)) for c in (
            f'{data.get("kind", "")} {str(data.get("checksum") or "")[:12]}' if isinstance(data, dict) else str(data),
            str(row.get("spec_hash") or "")[:12])]
        options = json.dumps(row.get("options"), indent=1, sort_keys=True, default=str) if row.get("options") else ""
        cells.append(f'<details><summary>options</summary><pre class="options">{escape(options)}</pre></details>')
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heads = "".join(f'<th data-type="text">{h}</th>' for h in ("model", "run", "method", "teacher", "data", "spec",
                                                                "options"))
    return f'<table id="lineage" class="sortable"><thead><tr>{heads}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def cost_points(entries: list[dict[str, Any]], names: list[str], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    axes = [key for key in COST_AXES if any((number(e.get(key)) or 0) > 0 for e in entries)]
    labels = dict(BUDGET)
    points = [{"entry": name, "x": {k: number(entry.get(k)) for k in axes if number(entry.get(k))},
               "y": {m["key"]: number(entry["metrics"][m["key"]].get("value")) for m in metrics
                     if m["key"] in entry["metrics"]}} for entry, name in zip(entries, names)]
    return {"axes": [{"key": k, "label": labels[k]} for k in axes], "points": [p for p in points if p["x"]]}


def cost_section(cost: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """The controls of the cost-quality chart (report.js draws it); FLOPs first when measured."""
    axes = sorted(((a["key"], a["label"]) for a in cost["axes"]), key=lambda a: a[0] != "flops_estimate")
    return (f'<div class="controls"><label>cost <select id="cost-x">{_options(axes)}</select></label>'
            f'<label>quality <select id="cost-y">{_options([(m["key"], m["label"]) for m in metrics])}</select>'
            '</label></div><p class="muted small">The dashed line joins the Pareto front: entries no other entry '
            'beats at lower or equal cost.</p><div id="cost-chart"></div>')


def samples_section(samples: dict[str, Any], entries: list[dict[str, Any]], names: list[str], cap: int) -> str:
    """The drill-down's controls and empty table (report.js fills it), opened on a trained entry against its
    reference: the comparison a reader came for."""
    named = [(n, n) for n in names if any(n in b["predictions"] for b in samples["benchmarks"])]
    by_name = dict(zip(names, entries))
    methods = [n for n, _ in named if by_name[n].get("role") == "method"] or [n for n, _ in named]
    first = next((n for n in methods if not by_name[n].get("is_reference")), methods[0])
    reference = next((n for n in methods if by_name[n].get("is_reference") and n != first),
                     next((n for n, _ in named if n != first), first))
    truncated = [b["key"] for b in samples["benchmarks"] if b["truncated"]]
    note = (f' The page keeps the first {cap} items of each benchmark; {", ".join(truncated)} '
            f'{"has" if len(truncated) == 1 else "have"} more (every record is in the run folder).' if truncated else "")
    widths = "".join(f'<col style="width:{w}%">' for w in (15, 29, 15, 33, 8))
    return ('<div class="controls" id="samples">'
            f'<label>entry <select id="drill-entry">{_options(named, first)}</select></label>'
            f'<label>benchmark <select id="drill-benchmark">'
            f'{_options([(b["key"], b["key"]) for b in samples["benchmarks"]])}</select></label>'
            '<label id="drill-seed-label">seed <select id="drill-seed"></select></label>'
            '<label><input type="checkbox" id="drill-disagree"> only items where it disagrees with </label>'
            f'<select id="drill-other">{_options(named, reference)}</select></div>'
            f'<p class="muted small"><span id="drill-count"></span>. Click an item to see every entry\'s answer.{note}'
            f'</p><div class="samples-box"><table class="samples"><colgroup>{widths}</colgroup><thead><tr><th>item</th>'
            '<th>prompt</th><th>reference</th><th>prediction</th><th class="num">score</th></tr></thead>'
            '<tbody id="drill-rows"></tbody></table></div>')


def _options(values: list[tuple[str, str]], selected: str | None = None) -> str:
    return "".join(f'<option value="{escape(v)}"{" selected" if v == selected else ""}>{escape(label)}</option>'
                   for v, label in values)


def _asset(name: str) -> str:
    return (resources.files("stillroom.plugins.formats") / "report_assets" / name).read_text(encoding="utf-8")


CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def html_report(rows: list[dict[str, Any]], *, title: str = "stillroom leaderboard", sample_cap: int = SAMPLE_CAP) -> str:
    """The whole page for leaderboard ``rows`` (``ResultsStore.rows`` form, one per model, evaluator, metric);
    the drill-down embeds the first ``sample_cap`` items of each benchmark and says so when there are more."""
    from stillroom.leaderboard import pairwise, pivot

    entries = pivot(rows)
    names = entry_names(entries)
    metrics = metric_columns(entries)
    pairs = [p for p in pairwise(rows) if p.get("difference") is not None]
    curves = training_curves(entries, names)
    dynamics = method_dynamics(entries, names, rows)
    cost = cost_points(entries, names, metrics)
    samples = sample_view(entries, names, sample_cap)
    data = {"entries": names, "metrics": metrics, "curves": curves, "dynamics": dynamics, "cost": cost,
            "samples": samples}
    runs = sorted({f'{e["model"].split("/", 1)[0]} {e["run_id"]}' for e in entries})
    seeds = sorted({len(e.get("seeds") or []) for e in entries if e.get("role") == "method"})
    references = sorted({e["reference"] for e in entries if e.get("reference")})
    summary = (f'{len(entries)} entries, {len(metrics)} metrics, {len(runs)} run{"s" if len(runs) != 1 else ""}'
               f'{" (" + ", ".join(runs) + ")" if 0 < len(runs) <= 3 else ""}; generated '
               f'{time.strftime("%Y-%m-%d %H:%M:%S")}. Intervals are 95%'
               + (" over seeds and items (hierarchical bootstrap)" if any(s > 1 for s in seeds) else "")
               + ("; verdicts compare each entry with the reference (" + ", ".join(references) + ") by a test paired "
                  "by item and seed, Holm-corrected" if references else "") + ".")
    sections = [("leaderboard", "Leaderboard", pivot_table(entries, names, metrics))]
    if pairs:
        sections.append(("verdicts", "Verdict matrix", '<p class="muted small">Each cell: row minus column and the '
                         'p-value of a paired test (not corrected for the number of pairs); green: the row entry is '
                         'significantly better (p &lt; 0.05), red: significantly worse.</p><div class="charts">'
                         + verdict_matrices(pairs, entries, names, metrics) + "</div>"))
    if curves:
        sections.append(("curves", "Training curves", '<p class="muted small">Training loss against optimizer step, '
                         'one chart per entry, seeds overlaid.</p><div class="charts" id="curves-charts"></div>'))
    if cost["axes"] and cost["points"] and metrics:
        sections.append(("cost", "Cost against quality", cost_section(cost, metrics)))
    if samples["benchmarks"]:
        sections.append(("samples", "Samples", samples_section(samples, entries, names, sample_cap)))
    if dynamics:
        sections.append(("dynamics", "Method dynamics", '<div class="charts" id="dynamics-charts"></div>'))
    sections.append(("lineage", "Lineage", lineage([r for r in rows if not str(r.get("metric", "")).startswith(
        ITERATION_PREFIX)])))
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).replace("<", "\\u003c")
    nav = " ".join(f'<a href="#{key}">{escape(heading)}</a>' for key, heading, _ in sections)
    parts = [f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
             f'<style>{_asset("report.css")}</style></head><body><h1>{escape(title)}</h1>'
             f'<p class="muted">{escape(summary)}</p><nav>{nav}</nav>']
    parts += [f'<section id="{key}"><h2>{escape(heading)}</h2>{html}</section>' for key, heading, html in sections]
    parts += [f'<script type="application/json" id="report-data">{payload}</script>',
              f"<script>{_asset('report.js')}</script></body></html>\n"]
    return "".join(parts)
