"""What `--jobs 2` buys on the quickstart: the same spec run with entries one after another in one process and
two at a time in child processes (submitit's local executor), with the leaderboards compared.

The spec is the packaged quickstart cut to sft, seqkd, gkd and step_by_step at two seeds (8 entries), with
``--steps`` optimizer steps each. A warm-up run fills the cache first (the quickstart teacher, its answers), so
both timed runs start from the same warm cache; each gets its own results store. Prints ``name=value`` lines,
``parallel_speedup`` (wall time --jobs 1 / --jobs 2, goal >= 1.7 on 2 idle cores) last. A child process pays
its start-up (imports, loading the teacher) once per entry, so short entries gain less.
Usage: python perf/parallel_entries.py [--steps 300] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tomllib
from pathlib import Path

os.environ.setdefault("STILLROOM_NO_PROGRESS", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per entry: tiny models train fastest so

import json  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "plugins" / "synthetic" / "quickstart.toml"
METHODS = ("sft", "seqkd", "gkd", "step_by_step")
COMPARED = ("value", "ci_low", "ci_high", "per_seed", "p_value", "verdict", "optimizer_steps", "train_tokens")


def write_spec(folder: Path, steps: int) -> Path:
    data = tomllib.loads(SPEC.read_text())
    data["name"] = "parallel-entries"
    data.pop("seed", None)
    data["seeds"] = [0, 1]
    data["budget"]["steps"] = steps
    data["methods"] = [m for m in data["methods"] if m["kind"] in METHODS]
    path = folder / "spec.json"
    path.write_text(json.dumps(data))
    return path


def timed_run(spec: Path, home: Path, jobs: int) -> tuple[float, dict]:
    from stillroom.runs import LaunchOptions, execute
    from stillroom.results import ResultsStore

    os.environ["STILLROOM_HOME"] = str(home)
    launch = LaunchOptions(jobs=jobs, threads_per_job=1) if jobs > 1 else None
    start = time.perf_counter()
    run = execute(spec, launch=launch, output_dir=home / "runs")
    seconds = time.perf_counter() - start
    with ResultsStore.default() as store:
        rows = {(r["model"], r["evaluator"], r["metric"]): {k: r[k] for k in COMPARED} for r in store.rows(run_id=run.id)}
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stillroom-parallel-") as scratch:
        folder = Path(scratch)
        timed_run(write_spec(folder, 1), folder / "warm", 1)  # teacher model and answers into the cache
        spec = write_spec(folder, options.steps)
        serial, serial_rows = timed_run(spec, folder / "serial", 1)
        parallel, parallel_rows = timed_run(spec, folder / "parallel", options.jobs)
    print(f"entries={len(METHODS) * 2}")
    print(f"steps={options.steps}")
    print(f"cpu_count={os.cpu_count()}")
    print(f"jobs1_seconds={serial:.1f}")
    print(f"jobs{options.jobs}_seconds={parallel:.1f}")
    print(f"same_leaderboard={serial_rows == parallel_rows}")
    print(f"parallel_speedup={serial / parallel:.2f}")


if __name__ == "__main__":
    main()
