"""The leaderboard: what the recorded results let one conclude, and the rows that show it.

Its first half lays out rows of the results store (``core/results.py``): the long form (``render``: one row per
model, evaluator and metric) and the pivot (``pivot``, ``render_pivot``: one row per model entry, one column per
evaluator/metric with its interval and verdict against the run's reference, and the budget the entry
consumed). ``stillroom leaderboard`` shows the pivot; ``--long`` the long form. The "gap closed" column places a
student between the untrained student (base) and the teacher of the same run: (student - base) / (teacher -
base), per evaluator and metric; empty when either anchor is missing or they tie. Rows from
``ResultsStore.rows`` carry the anchors (``base_value``, ``teacher_value``); other rows find them among
themselves.

Its second half is the statistics behind every verdict: paired tests between two models (McNemar, paired
bootstrap), a model's mean over seeds with a hierarchical-bootstrap interval, and the sign-flip tests of every
entry against a run's reference, Holm-corrected.

What ``--format`` accepts is not decided here: output formats are ``OutputRenderer``s registered through the
``stillroom_register_output_renderers`` hook (the built-in table, md, csv, json and html are the ``formats``
plugin's ``trylast`` defaults, which call the layouts below; the HTML report is that plugin's too). This module
computes and formats; it neither queries nor writes the store.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from stillroom.roles import UserError, suggest
from stillroom.results import BUDGET_COLUMNS, COMPARISON_FIELDS

if TYPE_CHECKING:
    from rich.console import Console

    from stillroom.plugin_manager import PluginHost

# the layouts this module draws; what `--format` accepts is the renderer registry (``PluginHost.renderers``)
LAYOUTS = ("table", "md", "csv", "json")  # `--compare` draws its pairs of models in these too
COLUMNS = ["model", "method", "evaluator", "metric", "value", "stderr", "n", "seeds", "verdict", "p_value",
           "gap_closed", "wall_seconds", "teacher_calls", "cost", "run_id"]
JSON_FIELDS = [*COLUMNS, "role", "ci_low", "ci_high", "higher_is_better", "spec_hash", "created", "samples_path",
               "teacher", "options", "run_dir", "parent_run", "per_seed", "seed_samples", *COMPARISON_FIELDS,
               *BUDGET_COLUMNS]
JSON_FIELDS = list(dict.fromkeys(JSON_FIELDS))
SORTABLE = [*COLUMNS, "role", "ci_low", "ci_high", "spec_hash", "created", "p_value", "diff_vs_reference",
            *BUDGET_COLUMNS]
SORTABLE = list(dict.fromkeys(SORTABLE))
TEXT_COLUMNS = {"model", "method", "evaluator", "metric", "run_id", "role", "spec_hash", "field", "test", "verdict",
                "seeds"}
COMPARE_COLUMNS = ["evaluator", "field", "test", "n", "a", "b", "difference", "ci_low", "ci_high", "p_value", "method"]


# ---------------------------------------------------------------------------------------------------------
# The interface of an output format (registered through ``stillroom_register_output_renderers``).

Shape = Literal["pivot", "long"]
DESTINATIONS = ("terminal", "stdout", "file")


@dataclass(frozen=True)
class RenderOptions:
    """What ``stillroom leaderboard`` hands a renderer beside the rows it shows."""

    shape: Shape
    """``pivot``: the rows are ``pivot`` entries (one per model entry, metrics keyed ``evaluator/metric``);
    ``long``: one row per model, evaluator and metric, with ``gap_closed``. Either way already sorted."""
    results: list[dict[str, Any]]
    """The store's long rows the shown rows come from (what the HTML report reads, whatever the shape)."""
    title: str = "stillroom leaderboard"
    console: Console | None = None
    """Where a ``terminal`` renderer draws (a ``rich.console.Console``); None: a fresh one on stdout."""


@dataclass(frozen=True)
class OutputRenderer:
    """One output format of ``stillroom leaderboard --format NAME``.

    ``render(rows, options)`` returns the text (or bytes) to print or write; a ``terminal`` renderer draws on
    ``options.console`` itself and returns ``""``.
    """

    name: str
    """What ``--format`` takes, e.g. ``md``."""
    description: str
    """One line for ``--help`` and error messages."""
    render: Callable[[list[dict[str, Any]], RenderOptions], str | bytes]
    destination: Literal["terminal", "stdout", "file"] = "stdout"
    """``terminal``: drawn for a person, no ``-o``; ``stdout``: printed, or written with ``-o``; ``file``: needs
    ``-o`` (a page, bytes)."""
    extension: str = ""
    """The file extension a written output takes, with its dot (``.html``); empty for ``terminal``."""
    shape: Shape = "pivot"
    """The rows it gets unless the user says ``--long`` or ``--pivot``."""

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"output renderer name {self.name!r}: use letters, digits, '-' and '_'")
        if not self.description.strip() or "\n" in self.description:
            raise ValueError(f"output renderer {self.name!r}: the description is one line of text")
        if self.destination not in DESTINATIONS:
            raise ValueError(f"output renderer {self.name!r}: destination {self.destination!r} is not one of "
                             f"{', '.join(DESTINATIONS)}")
        if self.shape not in ("pivot", "long"):
            raise ValueError(f"output renderer {self.name!r}: shape {self.shape!r} is not pivot or long")


def shaped_rows(rows: list[dict[str, Any]], shape: Shape, *, sort: str | None = None,
                descending: bool | None = None) -> list[dict[str, Any]]:
    """The store's long ``rows`` as a renderer of ``shape`` gets them: ``pivot`` entries, or copies of the long
    rows with ``gap_closed``; sorted by ``sort`` when given."""
    if shape == "pivot":
        entries = pivot(rows)
        return pivot_sort(entries, sort, descending) if sort else entries
    rows = add_gap_closed([dict(r) for r in rows])
    return sort_rows(rows, sort, descending) if sort else rows


def report_page(host: PluginHost, rows: list[dict[str, Any]], *, title: str) -> bytes | None:
    """A run's report: its long ``rows`` drawn by the output renderer registered as ``html`` (the ``formats``
    plugin's page unless a plugin replaces it), the way ``stillroom leaderboard --format html`` draws them, as
    the bytes to write; None when no renderer has that name."""
    registered = host.renderers.get("html")
    if registered is None:
        return None
    renderer = registered.renderer
    page = renderer.render(shaped_rows(rows, renderer.shape), RenderOptions(shape=renderer.shape, results=rows,
                                                                            title=title))
    return page if isinstance(page, bytes) else page.encode()


def gap_closed(student: float, base: float, teacher: float) -> float | None:
    """(student - base) / (teacher - base); None when teacher and base tie."""
    if teacher == base:
        return None
    return (student - base) / (teacher - base)


def add_gap_closed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``gap_closed`` on every method row (None elsewhere), in place; returns ``rows``."""
    anchors: dict[tuple, dict[str, float]] = {}
    for row in rows:
        if row.get("role") in ("teacher", "base"):
            anchors.setdefault((row["run_id"], row["evaluator"], row["metric"]), {})[row["role"]] = row["value"]
    for row in rows:
        found = anchors.get((row["run_id"], row["evaluator"], row["metric"]), {})
        base = row.get("base_value", found.get("base"))
        teacher = row.get("teacher_value", found.get("teacher"))
        row["gap_closed"] = None
        if row.get("role") == "method" and base is not None and teacher is not None:
            row["gap_closed"] = gap_closed(row["value"], base, teacher)
    return rows


def sort_rows(rows: list[dict[str, Any]], column: str, descending: bool | None = None) -> list[dict[str, Any]]:
    """Rows sorted by ``column`` (empty cells last); text columns default to ascending, numbers to descending."""
    if column not in SORTABLE:
        raise UserError(f"unknown column {column!r}{suggest(column, SORTABLE)}; sortable: {', '.join(SORTABLE)}",
                        "--sort")
    if descending is None:
        descending = column not in TEXT_COLUMNS
    present = sorted((r for r in rows if r.get(column) is not None), key=lambda r: _sort_key(r[column]),
                     reverse=descending)
    return present + [r for r in rows if r.get(column) is None]


def _sort_key(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _tabular(records: list[dict[str, Any]], columns: list[str], fmt: str, title: str, console=None) -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell_text(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in records]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")
        for record in records:
            table.add_row(*(cell_text(record.get(c)) for c in columns))
        (console or Console()).print(table)
        return ""
    raise UserError(f"unknown format {fmt!r}{suggest(fmt, LAYOUTS)}; use one of {', '.join(LAYOUTS)}", "--format")


def render(rows: list[dict[str, Any]], fmt: str = "table", console=None, *, sort: str | None = None,
           descending: bool | None = None, title: str = "stillroom leaderboard") -> str:
    """Render leaderboard rows in ``fmt``; the table format prints to ``console`` and returns ''."""
    return render_long(shaped_rows(rows, "long", sort=sort, descending=descending), fmt, console, title=title)


def render_long(rows: list[dict[str, Any]], fmt: str, console=None, *, title: str = "stillroom leaderboard") -> str:
    """The long form of ``rows`` already shaped by ``shaped_rows(..., "long")`` in the built-in layout ``fmt``."""
    if fmt == "json":
        return json.dumps([{k: r.get(k) for k in JSON_FIELDS} for r in rows], indent=2, default=str) + "\n"
    return _tabular(rows, COLUMNS, fmt, title, console)


def render_comparison(results: list[dict[str, Any]], fmt: str = "table", console=None) -> str:
    """Render ``compare_models`` results (table, md, csv or json)."""
    check_comparison_format(fmt)
    if fmt == "json":
        return json.dumps(results, indent=2, default=str) + "\n"
    title = f"{results[0]['model_a']} vs {results[0]['model_b']} (difference = A - B)" if results else "comparison"
    if fmt != "table":
        return _tabular(results, COMPARE_COLUMNS, fmt, title, console)
    return _compact_comparison(results, title, console)


def check_comparison_format(fmt: str, formats: Iterable[str] = ()) -> None:
    """A one-line error unless ``fmt`` is a layout of ``--compare`` (table, md, csv or json); ``formats`` are the
    registered output formats' names, which the error does not call unknown."""
    if fmt not in LAYOUTS:
        unknown = "" if fmt in formats else f"unknown format {fmt!r}{suggest(fmt, LAYOUTS)}; "
        raise UserError(f"{unknown}--compare renders as table, md, csv or json", "--format")


COMPARE_TESTS = {"mcnemar": "McNemar", "paired_bootstrap": "bootstrap"}


def _compact_comparison(results: list[dict[str, Any]], title: str, console=None) -> str:
    """The comparison laid out for an 80-column terminal: model names in the title, numbers to three
    decimals, the interval in one cell, the test's details in the caption."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    a, b = (results[0]["model_a"], results[0]["model_b"]) if results else ("A", "B")
    per_evaluator = {}
    for r in results:
        per_evaluator[r["evaluator"]] = per_evaluator.get(r["evaluator"], 0) + 1
    table = Table(title=f"A = {a}\nB = {b}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  show_edge=False, title_justify="left",
                  caption="A-B: difference of means; p: two-sided, not corrected for multiple comparisons",
                  caption_justify="left")
    for name, justify in (("evaluator", "left"), ("n", "right"), ("A", "right"), ("B", "right"), ("A-B", "right"),
                          ("95% CI", "right"), ("p", "right"), ("test", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for r in results:
        name = r["evaluator"] if per_evaluator[r["evaluator"]] == 1 else f"{r['evaluator']}:{r['field']}"
        test = COMPARE_TESTS.get(r["test"], r["test"])  # exact or chi-square: in --format json's "method"
        table.add_row(name, str(r["n"]), f"{r['a']:.3f}", f"{r['b']:.3f}", f"{r['difference']:+.3f}",
                      f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", _p_text(r["p_value"]), test)
    (console or Console()).print(table)
    return ""


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ---------------------------------------------------------------------------------------------------------
# The pivot: one row per model entry.

PIVOT_METRIC_FIELDS = ("evaluator", "metric", "higher_is_better", "value", "ci_low", "ci_high", "per_seed", "n",
                       "stderr", "samples_path", "seed_samples", *COMPARISON_FIELDS)
# the budget columns the terminal table shows (all of them go to md, csv and json)
TABLE_BUDGET = {"optimizer_steps": "steps", "train_tokens": "tokens", "teacher_tokens": "teacher tok",
                "teacher_calls": "calls", "flops_estimate": "FLOPs", "wall_seconds": "wall s", "cost": "cost"}
ROLE_ORDER = {"teacher": 0, "base": 1, "method": 2}


def metric_key(row: dict[str, Any]) -> str:
    return f"{row['evaluator']}/{row['metric']}"


def metric_title(key: str, keys: list[str] | None = None) -> str:
    """A column title: ``exact_match/exact_match`` shows as ``exact_match``; ``evaluator/metric`` as the metric
    alone when no other evaluator of ``keys`` has a metric of that name."""
    evaluator, _, metric = key.partition("/")
    if evaluator == metric:
        return evaluator
    if keys is not None and sum(k.partition("/")[2] == metric for k in keys) == 1:
        return metric
    return key


def pivot(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per model entry from long rows (see /README: the leaderboard): identity, ``seeds``,
    ``reference``, the budget columns, and ``metrics`` keyed ``evaluator/metric`` with value, interval,
    per-seed values and the comparison with the reference. Entries are ordered teacher, base, then methods
    by their first metric (best first), the reference before the methods."""
    entries: dict[Any, dict[str, Any]] = {}
    seen = [(r["model"], r["evaluator"], r["metric"]) for r in rows]
    # history (a model's results from several runs): one row per model and run
    by_run = len(set(seen)) < len(seen)
    for row in sorted(rows, key=lambda r: r.get("result_id") or 0):
        group = (row["model"], row.get("run_id")) if by_run else row["model"]
        entry = entries.get(group)
        if entry is None or (row.get("result_id") or 0) >= entry["_newest"]:
            fresh = {"model": row["model"], "entry": row["model"].split("/", 1)[-1], "run_id": row.get("run_id"),
                     "run_dir": row.get("run_dir"), "role": row.get("role"), "method": row.get("method"),
                     "seeds": row.get("seeds") or [], "reference": row.get("reference"),
                     **{c: row.get(c) for c in BUDGET_COLUMNS}}
            fresh["is_reference"] = fresh["reference"] == row["model"]
            metrics = entry["metrics"] if entry is not None else {}
            entry = {**fresh, "metrics": metrics, "_newest": row.get("result_id") or 0}
            entries[group] = entry
        entry["metrics"][metric_key(row)] = {f: row.get(f) for f in PIVOT_METRIC_FIELDS}
    out = [{k: v for k, v in e.items() if k != "_newest"} for e in entries.values()]
    keys = metric_keys(out)

    def order(entry):
        first = next((entry["metrics"][k]["value"] for k in keys if k in entry["metrics"]), None)
        return (ROLE_ORDER.get(entry["role"], 2), not entry["is_reference"], -(first if first is not None else -1e300))

    return sorted(out, key=order)


def metric_keys(entries: list[dict[str, Any]]) -> list[str]:
    """Every ``evaluator/metric`` of the pivot, in first-seen order."""
    return list(dict.fromkeys(k for e in entries for k in e["metrics"]))


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if abs(value) >= 1e4:
        return f"{value:.3g}"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"


def value_with_interval(metric: dict[str, Any] | None) -> str:
    """``0.512 [0.47, 0.55]``; the value alone when there is no interval."""
    if not metric or metric.get("value") is None:
        return ""
    text = _number(metric["value"])
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        text += f" [{_number(metric['ci_low'], 2)}, {_number(metric['ci_high'], 2)}]"
    return text


def verdict_text(entry: dict[str, Any], metric: dict[str, Any] | None) -> str:
    """``better (p=0.003)``, ``reference``, or empty when there was nothing to compare."""
    if entry.get("is_reference"):
        return "reference"
    if not metric or not metric.get("verdict"):
        return ""
    short = {"no difference detected": "no diff."}.get(metric["verdict"], metric["verdict"])
    return f"{short} (p={metric['p_value']:.2g})" if metric.get("p_value") is not None else short


def compact_number(value: Any) -> str:
    """A count or measure in a few characters: 950, 12.3k, 4.5M, 3.1G; small fractions to three places."""
    if value is None:
        return ""
    value = float(value)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def pivot_sort(entries: list[dict[str, Any]], column: str, descending: bool | None = None) -> list[dict[str, Any]]:
    """Pivot rows by a metric (``evaluator/metric`` or its column title; ``value``: the first metric) or a
    budget column; empty cells last."""
    keys = metric_keys(entries)
    titles = {metric_title(k, keys): k for k in keys}
    if keys:
        titles.setdefault("value", keys[0])  # the long form's habit: the first metric
    choices = [*keys, *titles, *BUDGET_COLUMNS, "model"]
    if column not in choices:
        raise UserError(f"unknown column {column!r}{suggest(column, choices)}; sortable: {', '.join(dict.fromkeys(choices))}",
                        "--sort")
    key = titles.get(column, column)
    if key in keys:
        get = lambda e: (e["metrics"].get(key) or {}).get("value")  # noqa: E731
    else:
        get = lambda e: e.get(key)  # noqa: E731
    descending = (column != "model") if descending is None else descending
    present = sorted((e for e in entries if get(e) is not None), key=get, reverse=descending)
    return present + [e for e in entries if get(e) is None]


def _flat(entry: dict[str, Any], keys: list[str], *, text: bool) -> dict[str, Any]:
    row = {"model": entry["model"], "role": entry["role"], "method": entry["method"],
           "seeds": ",".join(map(str, entry["seeds"])) if text else entry["seeds"], "reference": entry["reference"]}
    for key in keys:
        metric = entry["metrics"].get(key)
        if text:
            row[key] = value_with_interval(metric)
            row[f"{key} vs ref"] = verdict_text(entry, metric)
        else:
            metric = metric or {}
            row[key] = metric.get("value")
            for field in ("ci_low", "ci_high", "diff_vs_reference", "p_value", "verdict"):
                row[f"{key} {field}"] = metric.get(field)
    for column in BUDGET_COLUMNS:
        row[column] = entry.get(column)
    row["run_id"] = entry["run_id"]
    return row


def render_pivot(rows: list[dict[str, Any]], fmt: str = "table", console=None, *, sort: str | None = None,
                 descending: bool | None = None, title: str = "stillroom leaderboard") -> str:
    """The pivoted leaderboard of long ``rows`` in ``fmt`` (json: the ``pivot`` dicts themselves)."""
    entries = shaped_rows(rows, "pivot", sort=sort, descending=descending)
    return render_entries(entries, fmt, console, title=title)


def render_entries(entries: list[dict[str, Any]], fmt: str, console=None, *,
                   title: str = "stillroom leaderboard") -> str:
    """``pivot`` entries in the built-in layout ``fmt``."""
    keys = metric_keys(entries)
    if fmt == "json":
        return json.dumps(entries, indent=2, default=str) + "\n"
    if fmt == "csv":
        flat = [_flat(e, keys, text=False) for e in entries]
        return _tabular(flat, list(flat[0]) if flat else ["model"], fmt, title, console)
    if fmt == "md":
        flat = [{**_flat(e, keys, text=True), **{c: cell_text(e.get(c)) for c in BUDGET_COLUMNS}} for e in entries]
        return _tabular(flat, list(flat[0]) if flat else ["model"], fmt, title, console)
    if fmt != "table":
        raise UserError(f"unknown format {fmt!r}{suggest(fmt, LAYOUTS)}; use one of {', '.join(LAYOUTS)}", "--format")
    from rich.console import Console
    from rich.table import Table

    from rich import box

    # budget columns that tell entries apart: never shown when nothing was measured or all are zero
    shown_budget = [c for c in TABLE_BUDGET if any(e.get(c) for e in entries)]
    runs = {e["run_id"] for e in entries}
    if len(runs) == 1 and entries:  # one run: its name once in the title, entry labels in the rows
        title = f"{title}: {entries[0]['model'].split('/', 1)[0]} (run {next(iter(runs))})"
    seed_lists = {tuple(e["seeds"]) for e in entries if e["seeds"]}
    with_seeds = len(seed_lists) > 1  # entries trained with different seeds: a column; else the caption says
    seeds_note = f"methods trained with seeds {', '.join(map(str, next(iter(seed_lists))))}; " if len(seed_lists) == 1 else ""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False,
                  caption=f"{seeds_note}value and 95% interval (over seeds and test items); vs ref: verdict against "
                          "the reference entry, Holm-adjusted p of a paired sign-flip test", caption_justify="left")
    table.add_column("model", justify="left", no_wrap=True)
    if with_seeds:
        table.add_column("seeds", justify="right")
    for key in keys:
        # the results keep their width when the terminal is narrow; the budget columns give way first
        table.add_column(metric_title(key, keys), justify="right", min_width=11)
        table.add_column("vs ref", justify="left", min_width=9)
    for column in shown_budget:
        table.add_column(TABLE_BUDGET[column], justify="right")
    for entry in entries:
        cells = [entry["entry"] if len(runs) == 1 else entry["model"]]
        if with_seeds:
            cells.append(str(len(entry["seeds"])) if entry["seeds"] else "")
        for key in keys:
            metric = entry["metrics"].get(key)
            # two short lines per cell: value over interval, verdict over p-value
            cells += [value_with_interval(metric).replace(" [", "\n[").replace(", ", ","),
                      verdict_text(entry, metric).replace(" (p=", "\np=").rstrip(")")]
        cells += [compact_number(entry.get(c)) for c in shown_budget]
        table.add_row(*cells)
    (console or Console()).print(table)
    return ""


# ---------------------------------------------------------------------------------------------------------
# Statistics: paired significance tests between two models on the items both answered.
#
# Per-sample records (the ``samples.jsonl`` next to each result, written by ``evaluate_subject`` in
# ``core/results.py``) are joined on ``id``; ids must be unique within a file. Two per-sample fields are understood:
#
# - ``correct`` (bool, or 0/1): McNemar's test on the discordant pairs. With b = items only A got right and
#   c = items only B got right, the test is exact when b + c < 25 (two-sided binomial test of b ~ Bin(b + c, 1/2),
#   equal to ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``), otherwise chi-square with one degree of freedom
#   and continuity correction, (max(|b - c| - 1, 0))^2 / (b + c), as R's ``mcnemar.test``. The difference is
#   accuracy(A) - accuracy(B) with a Wald interval for paired proportions.
# - ``score`` (float): paired bootstrap of the mean difference (A - B): ``resamples`` resamples of the items,
#   drawn with ``numpy.random.default_rng(seed).integers(0, n, (resamples, n))`` row by row (in chunks, same
#   stream), a percentile interval (``numpy.quantile``, linear), and a two-sided p-value from the bootstrap
#   distribution shifted to the null, (1 + #{|mean* - mean| >= |mean|}) / (1 + resamples).
#
# The p-values of ``compare_models`` are per comparison, not corrected for multiplicity. The second half of it
# aggregates an entry over its seeds and compares entries with a run's reference, Holm-corrected (see the
# comment above ``ALPHA``). This part computes; it prints nothing.


Z95 = 1.959963984540054
EXACT_BELOW = 25
FIELDS = {"correct": "mcnemar", "score": "paired_bootstrap"}


def _binom_two_sided(k: int, n: int) -> float:
    """Two-sided exact binomial p-value for k successes in n trials with p = 1/2 (symmetric, so doubled tail)."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """McNemar's test for paired correctness ``a[i]``, ``b[i]`` of the same items (see module docstring)."""
    if len(a) != len(b) or not a:
        raise ValueError("mcnemar needs two non-empty lists of the same length")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n, discordant = len(a), only_a + only_b
    if discordant < EXACT_BELOW:
        method, statistic = "exact", float(only_a)
        p_value = _binom_two_sided(only_a, discordant) if discordant else 1.0
    else:
        method = "chi2"
        statistic = max(abs(only_a - only_b) - 1, 0) ** 2 / discordant
        p_value = math.erfc(math.sqrt(statistic / 2))  # survival function of chi-square with 1 dof
    difference = (only_a - only_b) / n
    se = math.sqrt(max(discordant - (only_a - only_b) ** 2 / n, 0.0)) / n
    return {"test": "mcnemar", "method": method, "n": n, "a": sum(map(bool, a)) / n, "b": sum(map(bool, b)) / n,
            "difference": difference, "ci_low": max(-1.0, difference - Z95 * se),
            "ci_high": min(1.0, difference + Z95 * se), "p_value": p_value, "statistic": statistic,
            "only_a": only_a, "only_b": only_b}


def paired_bootstrap(a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, Any]:
    """Paired bootstrap of mean(a) - mean(b) over the same items (see module docstring)."""
    import numpy as np

    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs two non-empty lists of the same length")
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(diffs)
    observed = float(diffs.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bound memory; consecutive draws continue the same stream
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        means[start:start + size] = diffs[rng.integers(0, n, size=(size, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    extreme = int(np.count_nonzero(np.abs(means - observed) >= abs(observed)))
    return {"test": "paired_bootstrap", "method": f"{resamples} resamples, seed {seed}", "n": n,
            "a": float(np.mean(a)), "b": float(np.mean(b)), "difference": observed, "ci_low": float(low),
            "ci_high": float(high), "p_value": (1 + extreme) / (1 + resamples)}


def load_samples(path: str | Path) -> dict[Any, dict[str, Any]]:
    """Per-sample records of one result keyed by ``id``."""
    from stillroom.rundir import read_jsonl

    path = Path(path)
    if not path.is_file():
        raise UserError("per-sample records are missing (was the run directory moved or deleted?)", str(path))
    records: dict[Any, dict[str, Any]] = {}
    for line, record in enumerate(read_jsonl(path), 1):
        key = record.get("id")
        if key is None or key in records:
            problem = "has no 'id'" if key is None else f"repeats id {key!r}"
            raise UserError(f"per-sample record {problem}; ids must be unique", f"{path}:{line}")
        records[key] = record
    return records


def _value(record: dict[str, Any], field: str) -> float | None:
    value = record.get(field)
    return None if value is None or isinstance(value, str) else float(value)


def compare_models(store, model_a: str, model_b: str, *, resamples: int = 10_000,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Paired tests of the latest results of two models, one per evaluator and per-sample field both have."""
    known = store.model_names()
    latest = {}
    for name in (model_a, model_b):
        if name not in known:
            raise UserError(f"unknown model {name!r}{suggest(name, known)}", "--compare")
        latest[name] = {}
        for row in store.rows(model=name):
            if row["samples_path"]:
                latest[name].setdefault(row["evaluator"], row["samples_path"])
    evaluators = sorted(set(latest[model_a]) & set(latest[model_b]))
    if not evaluators:
        raise UserError(f"{model_a!r} and {model_b!r} have no evaluator with per-sample records in common", "--compare")
    out, problems = [], []
    for evaluator in evaluators:
        records_a, records_b = load_samples(latest[model_a][evaluator]), load_samples(latest[model_b][evaluator])
        shared = [key for key in records_a if key in records_b]
        for field, test in FIELDS.items():
            pairs = [(_value(records_a[k], field), _value(records_b[k], field)) for k in shared]
            pairs = [pair for pair in pairs if None not in pair]
            if pairs:
                xs, ys = zip(*pairs)
                result = mcnemar(xs, ys) if test == "mcnemar" else paired_bootstrap(xs, ys, resamples=resamples, seed=seed)
                out.append({"model_a": model_a, "model_b": model_b, "evaluator": evaluator, "field": field, **result})
        if not any(r["evaluator"] == evaluator for r in out):
            problems.append(f"{evaluator}: " + ("shared items carry neither 'correct' nor 'score'" if shared
                                                else "no item ids in common"))
    if not out:
        raise UserError(f"nothing to compare between {model_a!r} and {model_b!r}: " + "; ".join(problems), "--compare")
    return out


# ---------------------------------------------------------------------------------------------------------
# Seeds and verdicts: aggregating an entry over its seeds, and comparing entries with a reference.
#
# An entry trained with seeds s = 1..k and evaluated on items i = 1..n gives scores x[s, i] (a per-sample
# `correct` or score). Its value is the mean over seeds of the per-seed means. Its 95% interval comes from a
# hierarchical bootstrap: draw k seeds with replacement, then for each drawn seed n items with replacement,
# take the mean; the 2.5% and 97.5% quantiles of ``resamples`` such means (one seed: an ordinary bootstrap of
# the items). The difference with the reference uses the same bootstrap on the paired differences
# d[s, i] = x[s, i] - r[s, i] (the reference's score on the same item, from the same seed; a reference
# evaluated once, such as the teacher, pairs with every seed). Its p-value is a paired sign-flip
# (randomisation) test on the d[s, i]: under "no difference" each difference is as likely negative as
# positive, so p = share of the 2^m sign assignments of the m non-zero differences whose |mean| is at least the
# observed one (exact: every assignment for m <= EXACT_FLIPS, else the distribution itself when the differences
# are whole multiples of one size, as 0/1 scores give (see LATTICE_SPAN); otherwise ``resamples`` random
# assignments, p = (1 + hits) / (1 + resamples)). With 0/1 scores and one seed that is the exact McNemar test. The test holds the trained models
# fixed (is this entry better on these items?); the interval also carries seed-to-seed variation. p-values are
# Holm-adjusted across the entries compared with the reference, per evaluator and metric, and a verdict is
# `better`/`worse` when the adjusted p-value is below ALPHA, else `no difference detected`.

ALPHA = 0.05
EXACT_FLIPS = 16
VERDICTS = ("better", "worse", "no difference detected")


CACHE_BYTES = 16_000_000
"""Resamples up to this size (per shape) are kept and shared: every comparison starts its generator at ``seed``,
so all pairs and metrics of a run with the same shape draw the same resamples, and a report compares every pair
of entries, a run every entry with its reference. Larger ones are drawn chunk by chunk each time."""


def _bootstrap_rng(seed: int):
    import numpy as np

    return np.random.default_rng(seed)


def _resample_weights(k: int, n: int, resamples: int, seed: int):
    """The hierarchical resamples of a k x n array as weights, chunk by chunk: row r of a chunk holds how often
    resample r drew each (seed, item) cell, so the resample means are ``weights @ x.ravel() / (k * n)``. Drawn
    as ``rng.integers`` seeds then items per chunk, the stream the bootstrap has always used."""
    import numpy as np

    rng = _bootstrap_rng(seed)
    chunk = max(1, 4_000_000 // (k * n))  # bound memory; consecutive draws continue the same stream
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        seeds = rng.integers(0, k, size=(size, k)) if k > 1 else np.zeros((size, 1), dtype=int)
        items = rng.integers(0, n, size=(size, k, n))
        cells = (seeds[:, :, None] * n + items) + (np.arange(size) * (k * n))[:, None, None]
        # float32 holds these counts (at most k * n) exactly; the product with the scores is float64
        yield np.bincount(cells.ravel(), minlength=size * k * n).reshape(size, k * n).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _cached_weights(k: int, n: int, resamples: int, seed: int):
    import numpy as np

    weights = np.concatenate(list(_resample_weights(k, n, resamples, seed)))
    weights.flags.writeable = False
    return weights


def hierarchical_bootstrap(scores, *, resamples: int = 2000, seed: int = 0,
                           confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``scores`` (a seeds x items array): seeds resampled, then items within
    each drawn seed (see above)."""
    import numpy as np

    x = np.asarray(scores, dtype=float)
    if x.ndim != 2 or x.size == 0:
        raise ValueError("hierarchical_bootstrap needs a non-empty seeds x items array")
    k, n = x.shape
    if resamples * k * n * 4 <= CACHE_BYTES:
        means = _cached_weights(k, n, resamples, seed) @ x.ravel() / (k * n)
    else:
        means = np.concatenate([w @ x.ravel() for w in _resample_weights(k, n, resamples, seed)]) / (k * n)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


LATTICE_SPAN = 1_000_000
"""Non-zero differences whose sizes are whole multiples w_i of the smallest, with sum(w_i) up to this (0/1
scores: every w_i is 1), get the exact sign-flip p-value (binomials, convolved) instead of random assignments."""
EXACT_INTEGERS = 5000  # up to this many differences of one size, the binomial is counted in integers
CONVOLUTION_COST = 50_000_000  # multiply-adds: dearer convolutions fall back to random assignments


def _lattice(d):
    """The non-zero differences ``d`` as whole multiples of their smallest size (ints), or None."""
    import numpy as np

    sizes = np.abs(d)
    units = sizes / sizes.min()
    whole = np.rint(units)
    if not np.allclose(units, whole, rtol=0, atol=1e-9 * max(1.0, float(whole.max()))):
        return None
    if whole.sum() > LATTICE_SPAN:
        return None
    return whole.astype(np.int64)


def _log_binomial_pmf(m: int):
    """log P(B = b), b = 0..m, for B ~ Binomial(m, 1/2)."""
    import numpy as np

    steps = np.log(np.arange(m, 0, -1, dtype=float)) - np.log(np.arange(1, m + 1, dtype=float))
    return np.concatenate(([0.0], np.cumsum(steps))) - m * math.log(2)


def _exact_lattice_p(weights, observed_units: int) -> float | None:
    """P(|sum_i s_i w_i| >= observed_units) for independent fair signs s_i, or None where the convolution is dear.
    sum_i s_i w_i = 2 U - sum_i w_i, where U sums v * Binomial(number of w_i equal to v, 1/2) over the sizes v."""
    import numpy as np

    sizes, counts = np.unique(weights, return_counts=True)
    span = int(weights.sum())
    if len(sizes) == 1 and counts[0] <= EXACT_INTEGERS:
        # one size (0/1 scores): the binomial counted in integers, exact as the enumeration above
        m, v = int(counts[0]), int(sizes[0])
        hits, c = 0, 1
        for b in range(m + 1):
            if abs(2 * b * v - span) >= observed_units:
                hits += c
            c = c * (m - b) // (b + 1)
        return hits / 2 ** m
    cost, length = 0, 1
    for v, m in zip(sizes.tolist(), counts.tolist()):
        cost += length * (v * m + 1)
        length += v * m
    if cost > CONVOLUTION_COST:
        return None
    pmf = np.ones(1)
    for v, m in zip(sizes.tolist(), counts.tolist()):
        spread = np.zeros(v * m + 1)
        spread[::v] = np.exp(_log_binomial_pmf(m))
        pmf = np.convolve(pmf, spread) if len(pmf) > 1 else spread
    totals = 2 * np.arange(span + 1) - span
    return float(min(1.0, pmf[np.abs(totals) >= observed_units].sum()))


@functools.lru_cache(maxsize=4)
def _cached_signs(m: int, resamples: int, seed: int):
    """Random sign assignments (resamples x m, int8), the stream ``sign_flip_test`` draws (see CACHE_BYTES)."""
    import numpy as np

    signs = np.concatenate(list(_random_signs(m, resamples, seed))).astype(np.int8)
    signs.flags.writeable = False
    return signs


def _random_signs(m: int, resamples: int, seed: int):
    rng = _bootstrap_rng(seed)
    chunk = max(1, 4_000_000 // m)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        yield rng.integers(0, 2, size=(size, m)) * 2 - 1


def sign_flip_test(differences, *, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired sign-flip test of mean(differences) = 0 (see above); 1.0 when every difference is 0."""
    import numpy as np

    d = np.asarray(differences, dtype=float).ravel()
    total = d.size
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum()) / total
    tolerance = 1e-12 * max(1.0, observed)
    if d.size <= EXACT_FLIPS:
        # every sign pattern: bit j of pattern p flips difference j
        signs = 1.0 - 2.0 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)
        means = np.abs(signs @ d) / total
        return float(np.count_nonzero(means >= observed - tolerance) / len(signs))
    weights = _lattice(d)
    if weights is not None:
        p = _exact_lattice_p(weights, abs(int((np.sign(d).astype(np.int64) * weights).sum())))
        if p is not None:
            return p
    if resamples * d.size <= CACHE_BYTES:
        # in blocks: the product converts each block of int8 signs to float64
        chunks = np.array_split(_cached_signs(d.size, resamples, seed), max(1, resamples * d.size // 4_000_000))
    else:
        chunks = _random_signs(d.size, resamples, seed)
    hits = sum(int(np.count_nonzero(np.abs(signs @ d) / total >= observed - tolerance)) for signs in chunks)
    return (1 + hits) / (1 + resamples)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: sorted p(1) <= ... <= p(m) become max over j <= i of min(1, (m - j + 1) p(j)),
    returned in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def verdict(difference: float, adjusted_p: float, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
    """``better``/``worse`` (than the reference) when ``adjusted_p`` < ``alpha``, else ``no difference detected``."""
    if adjusted_p >= alpha or difference == 0:
        return "no difference detected"
    return "better" if (difference > 0) == higher_is_better else "worse"


def _item_key(record: dict[str, Any], position: int) -> Any:
    for name in ("id", "question_id"):
        if record.get(name) is not None:
            return record[name]
    return position


def sample_scores(path: str | Path, metric: str, value: float | None = None) -> dict[Any, float] | None:
    """Per-item scores of ``metric`` from a samples.jsonl: the field named like the metric, else ``correct``,
    else ``score``. None when no field fits, or when ``value`` is given and their mean is not it (so a field
    that measures something else is never taken for the metric)."""
    from stillroom.rundir import read_jsonl

    path = Path(path)
    if not path.is_file():
        return None
    records = read_jsonl(path)
    if not records or not all(isinstance(r, dict) for r in records):
        return None
    for field in (metric, "correct", "score"):
        values = [_value(r, field) if not isinstance(r.get(field), dict) else None for r in records]
        if all(v is not None for v in values):
            scores = {}
            for position, (record, v) in enumerate(zip(records, values)):
                scores[_item_key(record, position)] = v
            if len(scores) != len(records):
                return None  # repeated ids: items cannot be paired
            mean = sum(scores.values()) / len(scores)
            if value is None or abs(mean - float(value)) <= 1e-6 * max(1.0, abs(float(value))):
                return scores
    return None


def score_matrix(per_seed: dict[Any, dict[Any, float]], items: list[Any] | None = None):
    """A seeds x items array of per-seed scores on the items every seed has (in the first seed's order)."""
    import numpy as np

    seeds = list(per_seed)
    if items is None:
        items = [key for key in per_seed[seeds[0]] if all(key in per_seed[s] for s in seeds)]
    return np.array([[per_seed[s][key] for key in items] for s in seeds], dtype=float), items


def aggregate_seeds(per_seed_values: dict[Any, float], per_seed_scores: dict[Any, dict[Any, float]] | None, *,
                    resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """An entry's value over its seeds: mean of the per-seed values and the hierarchical-bootstrap interval
    (None without per-sample scores)."""
    values = list(per_seed_values.values())
    out = {"value": sum(values) / len(values), "ci_low": None, "ci_high": None}
    if per_seed_scores:
        matrix, items = score_matrix(per_seed_scores)
        if items:
            out["ci_low"], out["ci_high"] = hierarchical_bootstrap(matrix, resamples=resamples, seed=seed)
    return out


def paired_differences(entry: dict[Any, dict[Any, float]], reference: dict[Any, dict[Any, float]]):
    """Per-(seed, item) differences entry - reference, paired by seed (a single-seed reference pairs with every
    seed) and by item id; None when they share no seed or no item."""
    import numpy as np

    if len(reference) == 1 and len(entry) >= 1:
        only = next(iter(reference.values()))
        pairs = {s: (entry[s], only) for s in entry}
    elif len(entry) == 1 and len(reference) > 1:
        only = next(iter(entry.values()))
        pairs = {s: (only, reference[s]) for s in reference}
    else:
        pairs = {s: (entry[s], reference[s]) for s in entry if s in reference}
    if not pairs:
        return None
    rows = []
    for a, b in pairs.values():
        items = [key for key in a if key in b]
        if not items:
            return None
        rows.append([a[key] - b[key] for key in items])
    if len({len(r) for r in rows}) != 1:
        common = set.intersection(*(set(a) & set(b) for a, b in pairs.values()))
        rows = [[a[key] - b[key] for key in a if key in common] for a, b in pairs.values()]
    return np.array(rows, dtype=float)


def compare_with(entry: dict[Any, dict[Any, float]], reference: dict[Any, dict[Any, float]], *,
                 resamples: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """Difference (entry - reference), its hierarchical-bootstrap interval and the raw sign-flip p-value."""
    d = paired_differences(entry, reference)
    if d is None or d.size == 0:
        return None
    low, high = hierarchical_bootstrap(d, resamples=resamples, seed=seed)
    return {"difference": float(d.mean()), "ci_low": low, "ci_high": high,
            "p_value": sign_flip_test(d, resamples=max(resamples, 10_000), seed=seed), "n": int(d.shape[1])}


def verdicts_against(reference: str, entries: dict[str, dict[Any, dict[Any, float]]], *,
                     higher_is_better: bool = True, resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every entry but ``reference`` compared with it (``entries``: name -> seed -> item -> score), the p-values
    Holm-adjusted across those comparisons. Returns name -> {diff_vs_reference, diff_ci_low, diff_ci_high,
    p_value (adjusted), p_value_raw, verdict}; entries that cannot be paired are left out."""
    if reference not in entries:
        return {}
    found = {}
    for name, scores in entries.items():
        if name != reference:
            result = compare_with(scores, entries[reference], resamples=resamples, seed=seed)
            if result is not None:
                found[name] = result
    names = list(found)
    adjusted = holm([found[n]["p_value"] for n in names])
    return {name: {"diff_vs_reference": found[name]["difference"], "diff_ci_low": found[name]["ci_low"],
                   "diff_ci_high": found[name]["ci_high"], "p_value": p, "p_value_raw": found[name]["p_value"],
                   "verdict": verdict(found[name]["difference"], p, higher_is_better)}
            for name, p in zip(names, adjusted)}


def seed_scores(row: dict[str, Any]) -> dict[Any, dict[Any, float]] | None:
    """seed -> item -> score of one leaderboard row (from its ``seed_samples``, else its ``samples_path``)."""
    paths = row.get("seed_samples") or ({"0": row["samples_path"]} if row.get("samples_path") else {})
    per_seed_values = row.get("per_seed") or {}
    out = {}
    for seed, path in paths.items():
        scores = sample_scores(path, row["metric"], per_seed_values.get(seed, row["value"] if len(paths) == 1 else None))
        if scores is None:
            return None
        out[seed] = scores
    return out or None


def pairwise(rows: list[dict[str, Any]], *, resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Every ordered pair (a, b), a before b, of the entries of one run, per evaluator and metric with
    per-sample scores: difference a - b, its interval and the raw (uncorrected) sign-flip p-value."""
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        groups.setdefault((row["run_id"], row["evaluator"], row["metric"]), {})[row["model"]] = row
    out = []
    for (run_id, evaluator, metric), by_model in groups.items():
        scores = {name: seed_scores(row) for name, row in by_model.items()}
        names = [n for n in by_model if scores[n]]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                result = compare_with(scores[a], scores[b], resamples=resamples, seed=seed)
                if result is not None:
                    out.append({"run_id": run_id, "evaluator": evaluator, "metric": metric,
                                "key": f"{evaluator}/{metric}", "a": a, "b": b, **result})
    return out
