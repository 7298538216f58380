"""``stillroom quickstart``: run the packaged offline spec (quickstart.toml next to this module) and print
its leaderboard.

The spec is an ordinary run spec, so ``stillroom run examples/quickstart.toml`` does the same work; the
command only fixes where runs go (``--output-dir``, since the packaged file's folder is not the user's) and
offers ``--fast``, the same spec shrunk for CI and smoke tests.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

SPEC_PATH = Path(__file__).with_name("quickstart.toml")

# Torch CPU threads for the quickstart. Measured on an idle 2-core machine: 200 teacher steps took 13.0 s on
# one thread and 20.1 s on two; models this small lose more to thread synchronisation than they gain.
DEFAULT_THREADS = 1

# What --fast shrinks: every size and step count, nothing about which components run, so methods added to
# the spec later get the fast treatment too (they honour the shared budget).
FAST_OVERRIDES: dict[str, Any] = {
    "name": "quickstart-fast",
    "data": {"train_size": 64, "test_size": 40, "validation_size": 40},  # train_size = train_examples: every
    # method takes all of them
    "teacher": {"shape": {"layers": 1, "hidden": 32, "heads": 2},
                # a high learning rate: in 100 steps the teacher learns at least the answer format, so
                # methods that parse its answers (step_by_step's rationales) have something to read
                "training": {"steps": 100, "batch_size": 32, "warmup_steps": 10, "eval_size": 40,
                             "learning_rate": 1e-2}},
    "student": {"shape": {"layers": 1, "hidden": 16, "heads": 2},
                "pretraining": {"steps": 30, "batch_size": 16, "warmup_steps": 3, "eval_size": 20}},
    "budget": {"train_examples": 64, "steps": 20, "batch_size": 16},
}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def packaged_spec() -> dict[str, Any]:
    """The packaged quickstart spec as a dict."""
    from stillroom.specs import read_spec_file

    return read_spec_file(SPEC_PATH)


def fast_spec(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The quickstart spec with small sizes: a teacher trained for seconds, a handful of steps per method."""
    spec = _merge(spec if spec is not None else packaged_spec(), FAST_OVERRIDES)
    for evaluator in spec.get("evaluators", []):
        if evaluator.get("kind") == "exact_match":
            evaluator["limit"] = min(int(evaluator.get("limit") or 40), 40)
    return spec


def run_quickstart(output_dir: Path, *, fast: bool = False, resume: bool = False,
                   threads: int | None = DEFAULT_THREADS, jobs: str | int | None = 1,
                   console=None):
    """Execute the packaged spec (or its fast variant), ``jobs`` method x seed entries at a time (a number or
    ``auto``: one per core); returns (run, rows of this run, seconds)."""
    import torch

    from stillroom.runs import LaunchOptions, execute, parse_jobs, visible_gpus
    from stillroom.results import ResultsStore

    count = parse_jobs(jobs)
    # each entry process trains on `threads` threads (tiny models: one), so `auto` fills every core
    launch = LaunchOptions(jobs=count, threads_per_job=threads or 1, gpus=visible_gpus()) if count > 1 else None
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="stillroom-quickstart-") as scratch:
            path = SPEC_PATH
            if fast:
                path = Path(scratch) / "quickstart-fast.json"
                path.write_text(json.dumps(fast_spec(), indent=2))
            run = execute(path, resume=resume, console=console, output_dir=output_dir, launch=launch)
    finally:
        torch.set_num_threads(previous_threads)
    with ResultsStore.default() as store:
        rows = store.rows(run_id=run.id, latest=False)
    return run, rows, time.perf_counter() - started


def _metric_name(key: str) -> str:
    return {"exact_match/exact_match": "exact match", "exact_match/rationale_rougeL": "rationale ROUGE-L"}.get(
        key, key.split("/")[-1].replace("_", " "))


def verdict_sentences(entries: list[dict[str, Any]]) -> list[str]:
    """One plain sentence per verdict that found a difference (``better`` or ``worse`` than the reference):
    which entry, which metric, by how much, with the interval and the adjusted p-value."""
    out = []
    for entry in entries:
        if entry["role"] != "method":  # the teacher and the base are anchors, not candidates
            continue
        for key, metric in entry["metrics"].items():
            if metric.get("verdict") not in ("better", "worse") or metric.get("diff_vs_reference") is None:
                continue
            reference = (entry.get("reference") or "").rsplit("/", 1)[-1]
            diff = metric["diff_vs_reference"]
            interval = ""
            if metric.get("diff_ci_low") is not None and metric.get("diff_ci_high") is not None:
                interval = f" (95% interval {metric['diff_ci_low']:+.3f} to {metric['diff_ci_high']:+.3f})"
            p_value = f", Holm-adjusted p = {metric['p_value']:.2g}" if metric.get("p_value") is not None else ""
            seeds = len(entry.get("seeds") or [])
            out.append(f"{entry['entry']} is {metric['verdict']} than {reference} on {_metric_name(key)}: "
                       f"{diff:+.3f}{interval} over {seeds} seed{'s' * (seeds != 1)} x {metric.get('n')} test "
                       f"problems{p_value}.")
    return out


def gap_sentence(entries: list[dict[str, Any]], key: str = "exact_match/exact_match") -> str | None:
    """How much of the teacher-base gap the best method entry closes, or None without both anchors."""
    value = {e["role"]: (e["metrics"].get(key) or {}).get("value") for e in entries if e["role"] in ("teacher", "base")}
    methods = [(m["metrics"][key]["value"], m["entry"]) for m in entries
               if m["role"] == "method" and (m["metrics"].get(key) or {}).get("value") is not None]
    if None in (value.get("teacher"), value.get("base")) or not methods or value["teacher"] <= value["base"]:
        return None
    best, label = max(methods)
    share = (best - value["base"]) / (value["teacher"] - value["base"])
    return (f"The best student, {label}, closes {share:.0%} of the gap between the base student "
            f"({value['base']:.3f}) and the teacher ({value['teacher']:.3f}) on exact match.")


def print_summary(rows: list[dict[str, Any]], console) -> None:
    """The pivoted leaderboard (verdicts against sft), then the gap closed and one sentence per real difference."""
    from stillroom.leaderboard import pivot, render_pivot

    render_pivot(rows, "table", console, title="quickstart leaderboard (held-out problems)")
    entries = pivot(rows)
    gap = gap_sentence(entries)
    if gap:
        console.print(gap, highlight=False)
    sentences = verdict_sentences(entries)
    for sentence in sentences:
        console.print(sentence, highlight=False)
    if not sentences:
        console.print("No method differs from the reference by more than chance at these seeds and test problems.",
                      highlight=False)


def register_quickstart(cli) -> None:
    import typer

    @cli.command("quickstart")
    def quickstart(output_dir: Path = typer.Option(Path("runs"), "--output-dir", "-o",
                                                   help="folder for the run directory (default ./runs)"),
                   fast: bool = typer.Option(False, "--fast", help="tiny sizes: a smoke test in about a minute, "
                                                                    "numbers not meaningful"),
                   resume: bool = typer.Option(False, "--resume",
                                               help="continue the newest unfinished quickstart run"),
                   threads: Optional[int] = typer.Option(DEFAULT_THREADS, "--threads", min=1,
                                                         help="torch CPU threads per entry (default 1: these tiny "
                                                              "models train fastest on one thread)"),
                   jobs: str = typer.Option("auto", "--jobs", "-j",
                                            help="method x seed entries trained at once in separate processes "
                                                 "(default auto: one per CPU core, at --threads each)")):
        """Distil a tiny arithmetic teacher into a tinier student, offline, and print the leaderboard."""
        from rich.console import Console
        from transformers.utils import logging as transformers_logging

        console = Console()
        transformers_logging.disable_progress_bar()  # one "Loading weights" bar per model load drowns the table
        if jobs.strip().lower() == "auto":
            jobs = str(max(1, (os.cpu_count() or 1) // (threads or 1)))
        run, rows, seconds = run_quickstart(output_dir, fast=fast, resume=resume, threads=threads, jobs=jobs,
                                            console=console)
        print_summary(rows, console)
        console.print(f"run {run.id} in {run.dir.root}; finished in {seconds:.0f} s. Every column: "
                      f"stillroom leaderboard --run {run.id}. A second run loads the teacher and its answers "
                      f"from the cache.")
