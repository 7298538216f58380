"""How fast the ``stillroom`` command starts: ``stillroom --help`` (goal: at most 0.5 s) and
``stillroom plugins list --json`` (which loads every plugin's components), against a bare interpreter start.

Each command runs several times in a fresh process; the median wall time is reported. For where the time goes,
run ``python -X importtime -m stillroom.cli --help 2> imports.txt``.
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7
STILLROOM = str(Path(sys.executable).with_name("stillroom"))


def median_seconds(command: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return statistics.median(times)


def main() -> None:
    bare = median_seconds([sys.executable, "-c", "pass"])
    listing = median_seconds([STILLROOM, "plugins", "list", "--json"])
    help_time = median_seconds([STILLROOM, "--help"])
    print(f"python_start_seconds={bare:.3f}")
    print(f"plugins_list_json_seconds={listing:.3f}")
    print(f"cli_help_seconds={help_time:.3f}")  # the headline, last


if __name__ == "__main__":
    main()
