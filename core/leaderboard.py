"""Rendering the results store: terminal table, markdown, CSV, JSON and an HTML report (``core/report.py``).

The "gap closed" column places a student between the untrained student (base) and the teacher of the same
run: (student - base) / (teacher - base), per evaluator and metric; empty when either anchor is missing or
they tie. Rows from ``ResultsStore.rows`` carry the anchors (``base_value``, ``teacher_value``); other rows
find them among themselves. This module formats rows; it does not query the store.

Two shapes: the long form (``render``: one row per model, evaluator and metric) and the pivot (``pivot``,
``render_pivot``: one row per model entry, one column per evaluator/metric with its interval and verdict
against the run's reference, and the budget the entry consumed). ``stillroom leaderboard`` shows the pivot;
``--long`` the long form.

What ``--format`` accepts is not decided here: output formats are ``OutputRenderer``s registered through the
``stillroom_register_output_renderers`` hook (the built-in table, md, csv, json and html are the ``formats``
plugin's ``trylast`` defaults, which call the layouts below).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from stillroom.errors import UserError, suggest
from stillroom.store import BUDGET_COLUMNS, COMPARISON_FIELDS

if TYPE_CHECKING:
    from rich.console import Console

# the layouts this module draws; what `--format` accepts is the renderer registry (``PluginHost.renderers``)
LAYOUTS = ("table", "md", "csv", "json", "html")
COMPARISON_LAYOUTS = ("table", "md", "csv", "json")  # `--compare` results are pairs of models, not leaderboard rows
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
    if fmt == "html":
        from stillroom.report import html_report

        return html_report(rows, title=title)
    return _tabular(rows, COLUMNS, fmt, title, console)


def render_comparison(results: list[dict[str, Any]], fmt: str = "table", console=None) -> str:
    """Render ``significance.compare_models`` results (table, md, csv or json)."""
    check_comparison_format(fmt)
    if fmt == "json":
        return json.dumps(results, indent=2, default=str) + "\n"
    title = f"{results[0]['model_a']} vs {results[0]['model_b']} (difference = A - B)" if results else "comparison"
    if fmt != "table":
        return _tabular(results, COMPARE_COLUMNS, fmt, title, console)
    return _compact_comparison(results, title, console)


def check_comparison_format(fmt: str) -> None:
    """A one-line error unless ``fmt`` is a layout of ``--compare`` (table, md, csv or json)."""
    if fmt not in COMPARISON_LAYOUTS:
        unknown = "" if fmt in LAYOUTS else f"unknown format {fmt!r}{suggest(fmt, COMPARISON_LAYOUTS)}; "
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
    return render_entries(entries, fmt, console, title=title, results=rows)


def render_entries(entries: list[dict[str, Any]], fmt: str, console=None, *, title: str = "stillroom leaderboard",
                   results: list[dict[str, Any]] | None = None) -> str:
    """``pivot`` entries in the built-in layout ``fmt``; ``results`` (the long rows) feed the html report."""
    keys = metric_keys(entries)
    if fmt == "json":
        return json.dumps(entries, indent=2, default=str) + "\n"
    if fmt == "html":
        from stillroom.report import html_report

        return html_report(results or [], title=title)
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
