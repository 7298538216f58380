"""Secrets: a sentinel API key lives only in the environment variable an `openai` endpoint's api_key_env names.
It must reach the server (which refuses other keys) and nothing else: not the run directory (spec copies,
manifest, events, stages, calls.json, report.html), not the call cache or the results store (raw SQLite bytes,
WAL files included), not the outputs of `stillroom generate` or `leaderboard`, not stdout or stderr, also
when requests fail (exhausted retries, a 401 whose body echoes the Authorization header back)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relkit import (KEY_ENV, SENTINEL, api_runs, api_spec, cli_env, meaningful_lines, stillroom)

NEEDLES = [SENTINEL.encode(), SENTINEL.split("-", 1)[1].encode(), "0123456789abcdef".encode()]


def leaks(root: Path, texts=()) -> list[str]:
    """Every file under ``root`` and every text in ``texts`` that holds the sentinel (or a distinctive part)."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(needle in data for needle in NEEDLES):
                found.append(str(path))
    for index, text in enumerate(texts):
        if any(needle.decode() in text for needle in NEEDLES):
            found.append(f"output #{index}: {text[:300]!r}")
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    return api_runs(tmp_path_factory.mktemp("api-runs"), tiny_model_dir)


def test_sentinel_never_written_by_a_run_through_faults(runs):
    run = runs["faulty"]
    assert run.done.returncode == 0, str(run.done)  # the server accepts only the sentinel: the key was sent
    assert sum(sum(s["faults"].values()) for s in run.server_stats.values()) > 0  # error paths were taken
    assert (run.root / "report.html").exists() and (run.run_dir / "calls.json").exists()
    assert any(p.name == "calls.sqlite" for p in run.root.rglob("*")) and any(
        p.name == "leaderboard.sqlite" for p in run.root.rglob("*"))
    texts = [run.done.stdout, run.done.stderr] + [t for d in run.outputs for t in (d.stdout, d.stderr)]
    assert leaks(run.root, texts) == []


def _server(**options):
    from stillroom.testing.fault_server import start_fault_server

    return start_fault_server(**options)


def _prompts(root: Path) -> Path:
    path = root / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": f"question {i}"}) + "\n" for i in range(3)))
    return path


def _generate(root: Path, base_url: str, *extra: str):
    env = cli_env(root, **{KEY_ENV: SENTINEL})
    return stillroom(["generate", "--endpoint", "openai", "--base-url", base_url, "--model", "m", "--api-key-env",
                      KEY_ENV, "--prompts", str(_prompts(root)), "--out", str(root / "out.jsonl"),
                      "--set", "backoff_base=0.01", "--set", "backoff_max=0.02", *extra], env, cwd=root, timeout=180)


def test_sentinel_never_written_when_calls_fail(tmp_path, tiny_model_dir):
    """Exhausted retries (500 on every attempt) and a 401 that echoes the key, through `generate` and `run`."""
    servers = {"exhausted": _server(require_key=SENTINEL, rate_500=1.0),
               "echo401": _server(require_key="sk-some-other-key")}
    try:
        cases = {name: tmp_path / name for name in ("generate-exhausted", "generate-401", "run-401")}
        for folder in cases.values():
            folder.mkdir()
        spec = api_spec(cases["run-401"], tiny_model_dir, {"api": servers["echo401"].base_url,
                                                           "judge": servers["echo401"].base_url})
        run_env = cli_env(cases["run-401"], **{KEY_ENV: SENTINEL})
        with ThreadPoolExecutor(3) as pool:
            futures = {
                "generate-exhausted": pool.submit(_generate, cases["generate-exhausted"],
                                                  servers["exhausted"].base_url, "--set", "max_retries=2",
                                                  "--concurrency", "1"),
                "generate-401": pool.submit(_generate, cases["generate-401"], servers["echo401"].base_url),
                "run-401": pool.submit(stillroom, ["run", str(spec)], run_env, cwd=cases["run-401"], timeout=300),
            }
            done = {name: f.result() for name, f in futures.items()}
        stats = {name: server.stats() for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    assert stats["exhausted"]["faults"]["500"] == 3  # one at a time: the first prompt is tried 3 times, then nothing more is sent
    assert stats["echo401"]["requests"] >= 2  # the refusals really echoed a key back
    for name, result in done.items():
        assert result.returncode == 2, f"{name}:\n{result}"
        lines = meaningful_lines(result.stderr)
        assert len(lines) == 1 and "Traceback" not in result.stderr, f"{name}:\n{result}"
        assert "endpoint openai http://127.0.0.1:" in lines[0], lines[0]
    assert "failed after 2 retries" in meaningful_lines(done["generate-exhausted"].stderr)[0]
    for name in ("generate-401", "run-401"):
        line = meaningful_lines(done[name].stderr)[0]
        assert "HTTP 401" in line and "[redacted]" in line, line
    texts = [t for result in done.values() for t in (result.stdout, result.stderr)]
    assert leaks(tmp_path, texts) == []


def test_the_scan_finds_a_planted_key(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "planted.sqlite")
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("INSERT INTO t VALUES (?)", (json.dumps({"header": f"Bearer {SENTINEL}"}),))
    db.commit()
    db.close()
    assert leaks(tmp_path) == [str(tmp_path / "planted.sqlite")]
    assert leaks(tmp_path / "nothing-here", [f"key {SENTINEL[:10]}...{SENTINEL[-16:]}"])
