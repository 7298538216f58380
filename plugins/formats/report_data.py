"""What the HTML report reads from run folders: training curves, method dynamics and per-sample records.

Every function takes pivot entries (``leaderboard.pivot``) and the display names ``report.entry_names`` gives
them, follows the paths the entries carry (``run_dir``; each metric's ``seed_samples``) and returns plain,
JSON-ready data for ``report_assets/report.js`` to draw. Missing or unreadable pieces are left out, never
invented. An entry's stages live under ``stages/methods/<label>/`` with a ``seed<s>/`` level when its run
trained several seeds (``training.entry_stage_prefix``). This module reads; it writes nothing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from stillroom.training import entry_stage_prefix

SAMPLE_CAP = 500  # items per benchmark embedded for the drill-down (keeps the quickstart page well under 2 MB)
TEXT_CAP = 1500  # characters kept of one prompt, reference or prediction
ITERATION_PREFIX = "iteration/"

# Per-iteration fields drawn together in one chart; the rest of a method's fields get a chart each, except
# accounting that the budget columns already show.
DYNAMICS_GROUPS = {"train_pool": "pool sizes", "cache_pool": "pool sizes", "generated": "pool sizes",
                   "hard": "hard / easy examples", "easy": "hard / easy examples",
                   "teacher_score": "referee scores", "student_score": "referee scores"}
DYNAMICS_LABELS = {"hard_fraction": "hard fraction", "mean_d": "mean d (teacher - student)", "heldout": "held-out score"}
ACCOUNTING = re.compile(r"^(calls_|asked_|protocol_|tokens|cost$|steps$|train_loss$|teacher_answered$|"
                        r"generation_attempts$|pairs_|referee_failures$)")


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _natural(path: Path) -> list:
    """Sort key that puts iter2 before iter10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def entry_folders(entry: dict[str, Any]) -> dict[str, Path]:
    """{seed: the entry's method folder for that seed}; a run of one seed has no seed level."""
    if not entry.get("run_dir") or entry.get("role") != "method":
        return {}
    root = Path(entry["run_dir"]) / "stages" / entry_stage_prefix("methods", entry["entry"], 0, seeded=False)
    if not root.is_dir():
        return {}
    seeded = sorted((p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"seed\d+", p.name)), key=_natural)
    return {p.name[4:]: p for p in seeded} if seeded else {"-": root}


def _stage_folders(folder: Path) -> list[Path]:
    """Finished stage folders under ``folder`` (any depth), in natural order."""
    return sorted((p.parent for p in folder.rglob("stage.json") if not any(".partial" in s for s in p.parts)),
                  key=_natural)


# ---- training curves ----------------------------------------------------------------------------------------

def stage_history(stage: Path) -> list[dict[str, Any]]:
    """The logged steps of one training stage: ``log_history.jsonl``, else ``log_history.json`` (a Trainer's
    ``state.log_history``), else a ``losses`` list (``losses.json`` or in ``stage.json``), one per step."""
    if (stage / "log_history.jsonl").is_file():
        lines = (stage / "log_history.jsonl").read_text().splitlines()
        return [row for row in (json.loads(line) for line in lines if line.strip()) if isinstance(row, dict)]
    if (stage / "log_history.json").is_file():
        found = json.loads((stage / "log_history.json").read_text())
        return [row for row in found if isinstance(row, dict)] if isinstance(found, list) else []
    losses = None
    if (stage / "losses.json").is_file():
        losses = json.loads((stage / "losses.json").read_text())
    else:
        losses = json.loads((stage / "stage.json").read_text()).get("losses")
    return [{"step": i + 1, "loss": v} for i, v in enumerate(losses)] if isinstance(losses, list) else []


def training_curves(entries: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """One chart per entry and logged quantity (loss, and eval_* keys when a method evaluates during training),
    one series per seed. An entry with several training stages (lion's iterations) reads as one axis: a stage
    whose step count starts again is shifted to follow the previous one; one that continues it is kept."""
    charts = []
    for entry, name in zip(entries, names):
        per_key: dict[str, list[dict[str, Any]]] = {}
        for seed, folder in entry_folders(entry).items():
            end, points = 0.0, {}
            for stage in _stage_folders(folder):
                history = [h for h in stage_history(stage) if number(h.get("step")) is not None]
                offset = end if history and min(h["step"] for h in history) <= end else 0.0
                for row in history:
                    for key, value in row.items():
                        if (key == "loss" or key.startswith("eval_")) and number(value) is not None \
                                and not key.endswith(("_runtime", "_per_second")):
                            points.setdefault(key, []).append([offset + row["step"], float(f"{value:.5g}")])
                if history:
                    end = offset + max(float(h["step"]) for h in history)
            for key, found in points.items():
                per_key.setdefault(key, []).append({"name": f"seed {seed}" if seed != "-" else name, "points": found})
        for key, series in per_key.items():
            title = name if key == "loss" else f"{name}: {key}"
            charts.append({"entry": name, "title": title, "y_label": key, "series": series})
    return charts


# ---- method dynamics -----------------------------------------------------------------------------------------

def _iterations(entry: dict[str, Any], long_rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{seed: per-iteration rows}: a method's ``dynamics.json`` per seed, else the rows' ``extra["iterations"]``
    and ``iteration/<k>/<name>`` results."""
    found = {}
    for seed, folder in entry_folders(entry).items():
        path = folder / "dynamics.json"
        if path.is_file():
            rows = json.loads(path.read_text()).get("iterations")
            if isinstance(rows, list):
                found[seed] = [r for r in rows if isinstance(r, dict)]
    if found:
        return found
    merged: dict[int, dict[str, Any]] = {}
    for row in long_rows:
        if row.get("model") != entry["model"] or row.get("run_id") != entry["run_id"]:
            continue
        extra = row.get("extra")
        for point in (extra.get("iterations") if isinstance(extra, dict) else None) or []:
            if isinstance(point, dict) and isinstance(point.get("iteration"), int):
                merged.setdefault(point["iteration"], {}).update(point)
        parts = str(row.get("metric", "")).split("/", 2)
        if len(parts) == 3 and parts[0] + "/" == ITERATION_PREFIX and parts[1].isdigit():
            merged.setdefault(int(parts[1]), {"iteration": int(parts[1])})[f"{row['evaluator']}: {parts[2]}"] = row["value"]
    return {"-": [merged[k] for k in sorted(merged)]} if merged else {}


def method_dynamics(entries: list[dict[str, Any]], names: list[str], long_rows: list[dict[str, Any]]) -> list[dict]:
    """Line charts of per-iteration fields (one series per entry, seed and field) and the pseudo-target mix as
    stacked bars. A field that is missing or zero everywhere gets no chart."""
    charts: dict[str, dict[str, Any]] = {}
    mix: dict[str, list] = {"categories": [], "teacher": [], "student": [], "fallback": []}
    for entry, name in zip(entries, names):
        for order, (seed, rows) in enumerate(_iterations(entry, long_rows).items()):
            who = name if seed == "-" else f"{name} seed {seed}"
            for field in sorted({k for r in rows for k in r} - {"iteration"}):
                if ACCOUNTING.match(field):
                    continue
                points = [[r["iteration"], number(r.get(field))] for r in rows
                          if isinstance(r.get("iteration"), int) and number(r.get(field)) is not None]
                if not points or all(p[1] == 0 for p in points):
                    continue
                group = DYNAMICS_GROUPS.get(field)
                title = group or DYNAMICS_LABELS.get(field, field)
                chart = charts.setdefault(title, {"title": title, "xLabel": "iteration", "yLabel": title, "series": []})
                # one colour per field (grouped) or entry; seeds of it differ by dash pattern
                chart["series"].append({"name": f"{who}: {field}" if group else who, "points": points,
                                        "colourKey": f"{name}: {field}" if group else name, "dash": order})
        for seed, folder in entry_folders(entry).items():
            mixed = []
            for stage in _stage_folders(folder):
                metrics = json.loads((stage / "stage.json").read_text())
                steps = number(metrics.get("optimizer_steps", metrics.get("steps")))
                if steps is not None and number(metrics.get("student_steps")) is not None:
                    mixed.append((stage, metrics, steps))
            for stage, metrics, steps in mixed:
                student, fallback = number(metrics["student_steps"]), number(metrics.get("fallback_steps")) or 0.0
                where = f" {stage.relative_to(folder).as_posix()}" if len(mixed) > 1 else ""
                mix["categories"].append((name if seed == "-" else f"{name} seed {seed}") + where)
                mix["teacher"].append(max(steps - student - fallback, 0.0))
                mix["student"].append(student)
                mix["fallback"].append(fallback)
    out = list(charts.values())
    if mix["categories"]:
        series = [{"name": "teacher pseudo-targets", "values": mix["teacher"]},
                  {"name": "student's own targets", "values": mix["student"]}]
        if any(mix["fallback"]):
            series.append({"name": "teacher targets in place of the student's (fallback)", "values": mix["fallback"]})
        out.append({"kind": "bars", "title": "pseudo-target mix (optimizer steps)", "categories": mix["categories"],
                    "series": series})
    return out


# ---- samples -------------------------------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        value = "\n".join(f"{m.get('role', '')}: {m['content']}" for m in value)  # chat messages
    elif not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(value) <= TEXT_CAP else value[:TEXT_CAP] + " [...]"


def _first(record: dict[str, Any], fields: tuple[str, ...]) -> Any:
    return next((record[f] for f in fields if record.get(f) is not None), None)


def sample_view(entries: list[dict[str, Any]], names: list[str], cap: int = SAMPLE_CAP) -> dict[str, Any]:
    """Per evaluator: the items (id, prompt, reference; the first ``cap``) and every entry's [prediction, score]
    per seed, aligned with the items. Read from the ``seed_samples`` paths of each metric."""
    from stillroom.rundir import read_jsonl

    benchmarks: dict[str, dict[str, Any]] = {}
    for entry, name in zip(entries, names):
        done = set()
        for cell in entry["metrics"].values():
            evaluator = cell.get("evaluator")
            paths = cell.get("seed_samples") or ({"-": cell["samples_path"]} if cell.get("samples_path") else {})
            if evaluator in done or not paths:
                continue
            done.add(evaluator)
            bench = benchmarks.setdefault(evaluator, {"key": evaluator, "items": [], "index": {}, "predictions": {},
                                                      "total": 0, "metric": cell.get("metric")})
            for seed, path in paths.items():
                if not Path(path).is_file():
                    continue
                answers: list = [None] * len(bench["items"])
                records = read_jsonl(path)
                bench["total"] = max(bench["total"], len(records))
                for position, record in enumerate(records):
                    key = str(_first(record, ("id", "question_id")) or position)
                    if key not in bench["index"]:
                        if len(bench["items"]) >= cap:
                            continue
                        bench["index"][key] = len(bench["items"])
                        bench["items"].append({"id": key, "prompt": None, "reference": None})
                        answers.append(None)
                    item = bench["items"][bench["index"][key]]
                    item["prompt"] = item["prompt"] or _text(_first(record, ("prompt", "question", "input", "turns")))
                    item["reference"] = item["reference"] or _text(
                        _first(record, ("reference", "gold", "target", "answer", "references")))
                    score = _first(record, (bench["metric"], "correct", "score"))
                    answers[bench["index"][key]] = [
                        _text(_first(record, ("prediction", "output", "completion", "response", "answer_text"))) or "",
                        number(score)]
                bench["predictions"].setdefault(name, {})[str(seed)] = answers
    out = []
    for bench in benchmarks.values():
        size = len(bench["items"])
        for per_seed in bench["predictions"].values():  # entries read before later items were added
            for seed, answers in per_seed.items():
                per_seed[seed] = answers + [None] * (size - len(answers))
        out.append({"key": bench["key"], "items": bench["items"], "predictions": bench["predictions"],
                    "total": bench["total"], "truncated": bench["total"] > size})
    return {"benchmarks": out, "cap": cap}
