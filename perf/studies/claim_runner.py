"""Shared machinery of the paper-claim studies (claim_*.py next to this file): each claim is one or more runs
of the packaged quickstart (same cached teacher, same pretrained base student, same data) with the study's
own method entries, at several seeds, through ``stillroom.runs.execute`` -- so every arm trains through the
same engine under one budget, and the leaderboard's own paired statistics give the answer: per arm the exact
match on held-out problems, and against the study's reference arm the difference, its 95% interval
(hierarchical bootstrap over seeds, then problems) and a sign-flip p-value paired by (seed, problem),
Holm-adjusted across the run's arms (core/leaderboard.py, through ``stillroom.leaderboard.pivot``).

Not a test: each run takes minutes. Results are printed and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STILLROOM_NO_PROGRESS", "1")

KEY = "exact_match/exact_match"


def arguments(description: str, *, steps: int = 300, seeds: str = "0,1,2,3,4",
              extra: dict[str, tuple[type, str]] | None = None) -> argparse.Namespace:
    """The common options of a study; ``extra`` adds a study's own (flag: (type, help), default None)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", default=seeds, help="comma-separated seeds (at least 5 for a claim)")
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps of every arm")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate of every arm (default: the quickstart budget's)")
    parser.add_argument("--warmup-ratio", type=float, default=None,
                        help="linear warm-up of every arm, a fraction of the steps (default: the quickstart "
                             "budget's)")
    parser.add_argument("--test-size", type=int, default=200, help="held-out problems scored per seed")
    parser.add_argument("--jobs", default="2", help="entries trained at once (separate processes)")
    parser.add_argument("--output-dir", default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    for flag, (kind, text) in (extra or {}).items():
        parser.add_argument(flag, type=kind, default=None, help=text)
    return parser.parse_args()


def study_spec(name: str, methods: list[dict[str, Any]], reference: str, args: argparse.Namespace, *,
               train_examples: int = 2000, budget: dict[str, Any] | None = None,
               split: str = "test") -> dict[str, Any]:
    """The packaged quickstart spec with this study's arms, seeds and budget (teacher, base student and task
    unchanged, so the studies share the quickstart's cached models)."""
    from stillroom.plugins.synthetic.quickstart import packaged_spec

    spec = copy.deepcopy(packaged_spec())
    spec["name"] = name
    spec["seeds"] = [int(s) for s in str(args.seeds).split(",")]
    spec["methods"] = methods
    spec["reference"] = reference
    spec["data"]["test_size"] = args.test_size
    spec["data"]["train_size"] = max(train_examples, spec["data"]["train_size"])
    spec["budget"] = {**spec["budget"], "steps": args.steps, "train_examples": train_examples, **(budget or {})}
    if args.learning_rate:  # --learning-rate; else the quickstart budget's
        spec["budget"]["learning_rate"] = args.learning_rate
    if args.warmup_ratio is not None:  # --warmup-ratio (0 for none); else the quickstart budget's
        spec["budget"]["warmup_ratio"] = args.warmup_ratio or None
    spec["evaluators"] = [{"kind": "exact_match", "rouge": False, "split": split}]
    return spec


def run_study(spec: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Execute ``spec``; returns the pivot rows of the run (one per entry)."""
    from stillroom.runs import LaunchOptions, parse_jobs
    from stillroom.leaderboard import pivot
    from stillroom.runs import execute
    from stillroom.results import ResultsStore

    import torch

    torch.set_num_threads(1)
    jobs = parse_jobs(args.jobs)
    launch = LaunchOptions(jobs=jobs, threads_per_job=1) if jobs > 1 else None
    with tempfile.TemporaryDirectory(prefix="stillroom-study-") as scratch:
        output = Path(args.output_dir) if args.output_dir else Path(scratch) / "runs"
        path = Path(scratch) / f"{spec['name']}.json"
        path.write_text(json.dumps(spec, indent=2))
        started = time.perf_counter()
        run = execute(path, output_dir=output, launch=launch)
        seconds = time.perf_counter() - started
        with ResultsStore.default() as store:
            rows = store.rows(run_id=run.id, latest=False)
    entries = pivot(rows)
    for entry in entries:
        entry["run_seconds"] = round(seconds, 1)
    return entries


def summary(entries: list[dict[str, Any]], label: str = "") -> list[dict[str, Any]]:
    """One line per entry: exact match [95% interval], per-seed values, and the comparison with the reference."""
    out = []
    for entry in entries:
        metric = entry["metrics"].get(KEY) or {}
        row = {"study": label, "entry": entry["entry"], "role": entry["role"], "seeds": entry["seeds"],
               "exact_match": metric.get("value"), "ci_low": metric.get("ci_low"), "ci_high": metric.get("ci_high"),
               "per_seed": metric.get("per_seed"), "n": metric.get("n"),
               "diff_vs_reference": metric.get("diff_vs_reference"), "diff_ci_low": metric.get("diff_ci_low"),
               "diff_ci_high": metric.get("diff_ci_high"), "p_value": metric.get("p_value"),
               "p_value_raw": metric.get("p_value_raw"), "verdict": metric.get("verdict"),
               "reference": (entry.get("reference") or "").rsplit("/", 1)[-1],
               "teacher_calls": entry.get("teacher_calls"), "train_sequences": entry.get("train_sequences"),
               "wall_seconds": entry.get("wall_seconds"), "run_seconds": entry.get("run_seconds")}
        out.append(row)
        value = f"{row['exact_match']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if row["exact_match"] is not None \
            and row["ci_low"] is not None else str(row["exact_match"])
        versus = ""
        if row["diff_vs_reference"] is not None:
            versus = (f"  vs {row['reference']}: {row['diff_vs_reference']:+.3f} [{row['diff_ci_low']:+.3f}, "
                      f"{row['diff_ci_high']:+.3f}] p={row['p_value']:.3g} -> {row['verdict']}")
        print(f"{label:>12} {row['entry']:<22} {value}{versus}  teacher calls {row['teacher_calls']}", flush=True)
    return out


def finish(rows: list[dict[str, Any]], args: argparse.Namespace, claim: str) -> None:
    if args.out:
        Path(args.out).write_text(json.dumps({"claim": claim, "seeds": args.seeds, "steps": args.steps,
                                              "test_size": args.test_size, "rows": rows}, indent=2))
        print(f"written {args.out}")
