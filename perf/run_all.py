"""Run every performance script in perf/ and print one summary table.

Each script prints ``name=value`` lines, its headline figure last. Scripts measure both sides (ours and the
underlying library's) in the same process, so the ratios hold on a noisy machine.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOALS = {  # headline -> (comparison, goal)
    "api_fanout_speedup": (">=", 12.0),
    "gkd_overhead_ratio": ("<=", 1.05),
    "engine_overhead_ratio": ("<=", 1.05),
    "eval_overhead_ratio": ("<=", 1.05),
    "hf_batched_speedup": (">=", 5.0),
    "cli_help_seconds": ("<=", 0.5),
    "signal_bytes_per_token": ("<=", 100.0),
    "parallel_speedup": (">=", 1.7),
}


def run(script: Path) -> tuple[dict[str, str], str | None, float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=os.environ.copy())
    figures, headline = {}, None
    for line in done.stdout.splitlines():
        if "=" in line and " " not in line.split("=", 1)[0]:
            key, value = line.split("=", 1)
            figures[key] = value.strip()
            headline = key
    error = "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]
    return figures, headline, time.perf_counter() - start, error


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name)
    rows, failed = [], False
    for script in scripts:
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        figures, headline, seconds, error = run(script)
        for key, value in figures.items():
            print(f"{script.stem}.{key}={value}")
        verdict = ""
        if headline in GOALS:
            op, goal = GOALS[headline]
            value = float(figures[headline])
            verdict = "meets goal" if (value >= goal if op == ">=" else value <= goal) else f"misses goal {op} {goal}"
        if error:
            failed, verdict = True, f"FAILED: {error}"
        rows.append((script.name, headline or "-", figures.get(headline, "-") if headline else "-", verdict, f"{seconds:.0f}s"))
    widths = [max(len(str(r[i])) for r in rows + [("script", "headline", "value", "verdict", "time")]) for i in range(5)]
    print()
    for row in [("script", "headline", "value", "verdict", "time"), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
