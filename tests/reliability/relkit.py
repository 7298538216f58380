"""Shared helpers of the reliability suite (imported by the test_rel_* files): the real CLI in a subprocess
with scratch cache and home folders, free ports, a small TOML writer, and the checks every failure must pass
(exit 2, one meaningful line, no traceback, nothing half-written)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
SHARED_DATA = Path("/work/shared/data")
ALLOWED_NOISE = (re.compile(r'^Error loading plugin "'),)
# Progress bars libraries draw on stderr (transformers' "Loading weights: 100%|####| 20/20 [...]"): not content.
LIBRARY_NOISE = (re.compile(r"^\s*[^:]{0,60}:\s+\d+%\|.*\|\s*\d+/\d+ \["),)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, released, and checked to refuse)."""
    for _ in range(20):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no closed port found")


def cli_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: scratch cache and home under ``root``, offline hub, no progress."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STILLROOM_", "PYTEST_")) and k not in ("PYTHONPATH",)}
    env.update({
        "STILLROOM_CACHE_DIR": str(root / "cache"),
        "STILLROOM_HOME": str(root / "home"),
        "STILLROOM_NO_PROGRESS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(root / "hf_home"),
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    })
    if SHARED_DATA.exists():
        env["STILLROOM_DATA"] = str(SHARED_DATA)
    env.update(extra)
    return env


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str
    argv: list[str]
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"$ stillroom {' '.join(self.argv)}\nrc={self.returncode} ({self.seconds} s)\n--- stdout\n{self.stdout[-3000:]}\n" \
               f"--- stderr\n{self.stderr[-3000:]}"


def stillroom(argv: list[str], env: dict[str, str], *, cwd: Path | None = None, timeout: float = 240,
              preexec_fn=None, stdin=None) -> Done:
    """Run ``python -m stillroom.cli ARGV``; the process group is killed if it outlives ``timeout``. ``stdin``:
    as for Popen (None inherits the test's; subprocess.DEVNULL is "not a terminal")."""
    started = time.monotonic()
    process = subprocess.Popen([PYTHON, "-m", "stillroom.cli", *argv], env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=preexec_fn,
                               stdin=stdin)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"stillroom {' '.join(argv)} ran past {timeout} s\n{out[-2000:]}\n{err[-2000:]}")
    return Done(process.returncode, out, err, list(argv), round(time.monotonic() - started, 2))


def meaningful_lines(stderr: str) -> list[str]:
    """stderr lines that are neither blank nor allowed noise (the broken-plugin report)."""
    return [line for line in stderr.splitlines()
            if line.strip() and not any(p.search(line) for p in (*ALLOWED_NOISE, *LIBRARY_NOISE))]


def sqlite_ok(path: Path) -> str:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def half_written(root: Path, *, skip: tuple[Path, ...] = ()) -> list[str]:
    """Leftovers of interrupted writes under ``root`` (outside ``skip``): *.tmp*, *.partial*, and any file in a
    cache/home folder that is not an SQLite database (or its -wal/-shm companion) passing integrity_check."""
    problems = []
    for path in root.rglob("*"):
        if any(path == s or s in path.parents for s in skip):
            continue
        if re.search(r"\.tmp|\.partial", path.name):
            problems.append(f"half-written: {path}")
    for folder in (root / "cache", root / "home"):
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            if not path.is_file() or (folder / "models") in path.parents:
                continue
            if path.suffix == ".sqlite":
                result = sqlite_ok(path)
                if result != "ok":
                    problems.append(f"{path}: integrity_check says {result}")
            elif not re.search(r"\.sqlite-(wal|shm|journal)$", path.name) and not path.name.endswith(".lock"):
                problems.append(f"unexpected file in {folder.name}: {path}")
    return problems


@pytest.fixture
def rel_root(tmp_path) -> Path:
    (tmp_path / "cache").mkdir()
    (tmp_path / "home").mkdir()
    return tmp_path


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(spec: dict, prefix: str = "") -> str:
    """TOML text of a spec dict: scalars first, then tables, then arrays of tables (enough for run specs)."""
    lines, tables, arrays = [], [], []
    for key, value in spec.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) or k for k, v in value.items()):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        out += f"\n[{prefix}{key}]\n" + to_toml(value, f"{prefix}{key}.")
    for key, items in arrays:
        for item in items:
            out += f"\n[[{prefix}{key}]]\n" + to_toml(item, f"{prefix}{key}.")
    return out


# ---------------------------------------------------------------------------------------------------------
# The API spec (examples/reliability/api_faults.toml) against loopback fault-injection servers, clean and
# faulty, shared by test_rel_faults.py and test_rel_secrets.py: each flavour runs once per session.

EXAMPLES = ROOT / "examples" / "reliability"
SENTINEL = "sk-SENTINEL-0123456789abcdef"
KEY_ENV = "STILLROOM_REL_API_KEY"
FAULTS = {"rate_429": 0.08, "rate_500": 0.08, "rate_slow": 0.06, "rate_drop": 0.06, "rate_truncated": 0.06,
                "rate_garbage": 0.06, "slow_ms": 300, "retry_after": "0.2"}


@dataclass
class ApiRun:
    root: Path
    env: dict
    done: Done
    run_dir: Path | None
    server_stats: dict
    rows: list
    outputs: list  # Done of the commands run after the run (leaderboard json/html)


def api_spec(root: Path, tiny: Path, urls: dict[str, str], **top: object) -> Path:
    """examples/reliability/api_faults.toml with these server URLs, the tiny student, absolute data paths and
    ``top`` (name, seed, ...) replacing top-level values; written to ``root``."""
    import tomllib

    spec = tomllib.loads((EXAMPLES / "api_faults.toml").read_text())
    spec.update(top)
    for name, url in urls.items():
        spec["endpoints"][name]["base_url"] = url
    spec["student"]["model"] = str(tiny)
    spec["data"]["path"] = str(EXAMPLES / "records.jsonl")
    for evaluator in spec["evaluators"]:
        if "data_dir" in evaluator:
            evaluator["data_dir"] = str(EXAMPLES / evaluator["data_dir"])
    path = root / f"{spec['name']}.toml"
    path.write_text(to_toml(spec))
    return path


def _one_api_run(root: Path, tiny: Path, faulty: bool) -> ApiRun:
    from stillroom.testing.fault_server import start_fault_server

    root.mkdir(parents=True, exist_ok=True)
    faults = FAULTS if faulty else {}
    servers = {}
    try:
        servers["api"] = start_fault_server(require_key=SENTINEL, seed=1, **faults)
        servers["judge"] = start_fault_server(require_key=SENTINEL, seed=2, answer="fixed", fixed_text="8 7",
                                              **faults)
        spec = api_spec(root, tiny, {name: s.base_url for name, s in servers.items()})
        env = cli_env(root, **{KEY_ENV: SENTINEL})
        done = stillroom(["run", str(spec)], env, cwd=root, timeout=420)
        stats = {name: s.stats() for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    found = sorted((root / "runs" / "api-faults").glob("*/manifest.json"))
    run_dir = found[-1].parent if found else None
    board = stillroom(["leaderboard", "--format", "json", "--history"], env, cwd=root, timeout=120)
    html = stillroom(["leaderboard", "--format", "html", "-o", str(root / "report.html")], env, cwd=root, timeout=120)
    try:
        rows = json.loads(board.stdout) if board.returncode == 0 and board.stdout.strip() else []
    except json.JSONDecodeError:
        rows = []
    return ApiRun(root, env, done, run_dir, stats, rows, [board, html])


_API_RUNS: dict[str, ApiRun] = {}


def api_runs(base: Path, tiny: Path) -> dict[str, ApiRun]:
    """{"clean": ApiRun, "faulty": ApiRun}: the spec run against fault-free and fault-injecting servers (at the
    same time, each with its own cache and home), once per session."""
    if not _API_RUNS:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            futures = {kind: pool.submit(_one_api_run, base / kind, tiny, kind == "faulty")
                       for kind in ("clean", "faulty")}
            _API_RUNS.update({kind: f.result() for kind, f in futures.items()})
    return _API_RUNS


def read_events(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
