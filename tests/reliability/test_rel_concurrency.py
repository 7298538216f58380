"""Concurrency: two `stillroom run` processes of different specs and a `stillroom generate` share one
STILLROOM_CACHE_DIR and STILLROOM_HOME at the same time. All finish; the call cache and the results store
pass PRAGMA integrity_check, both runs' rows are in the store, every cached answer parses, and nothing is
left half-written."""

from __future__ import annotations

import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

from relkit import KEY_ENV, SENTINEL, api_spec, cli_env, half_written, sqlite_ok, stillroom


def test_two_runs_and_a_generate_share_cache_and_store(tmp_path, tiny_model_dir):
    from stillroom import Completion
    from stillroom.testing.fault_server import start_fault_server

    (tmp_path / "cache").mkdir()
    (tmp_path / "home").mkdir()
    env = cli_env(tmp_path, **{KEY_ENV: SENTINEL})
    # A delay per request keeps each `generate` writing the cache (in chunks of 8) for a few seconds.
    api = start_fault_server(require_key=SENTINEL, delay_ms=60)
    judge = start_fault_server(require_key=SENTINEL, delay_ms=60, answer="fixed", fixed_text="8 7")
    try:
        urls = {"api": api.base_url, "judge": judge.base_url}
        specs = [api_spec(tmp_path, tiny_model_dir, urls, name="shared-a", seed=1),
                 api_spec(tmp_path, tiny_model_dir, urls, name="shared-b", seed=2)]
        runs_done = threading.Event()

        def generate_until_the_runs_end():
            """`stillroom generate` over fresh prompts, again and again while the runs work (at least once)."""
            results, batch = [], 0
            while not runs_done.is_set() or not results:
                prompts = tmp_path / f"prompts{batch}.jsonl"
                prompts.write_text("".join(json.dumps({"id": i, "prompt": f"batch {batch} count to {i}"}) + "\n"
                                           for i in range(100)))
                results.append(stillroom(["generate", "--endpoint", "openai", "--base-url", api.base_url, "--model",
                                          "m", "--api-key-env", KEY_ENV, "--concurrency", "2", "--prompts",
                                          str(prompts), "--out", str(tmp_path / f"out{batch}.jsonl")],
                                         env, cwd=tmp_path, timeout=300))
                batch += 1
            return results

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(stillroom, ["run", str(spec)], env, cwd=tmp_path, timeout=420) for spec in specs]
            writer = pool.submit(generate_until_the_runs_end)
            results = [f.result() for f in futures]
            runs_done.set()
            generated = writer.result()
    finally:
        api.stop()
        judge.stop()

    for result in results + generated:
        assert result.returncode == 0, str(result)
    cache, store = tmp_path / "cache" / "calls.sqlite", tmp_path / "home" / "leaderboard.sqlite"
    assert sqlite_ok(cache) == "ok" and sqlite_ok(store) == "ok"

    db = sqlite3.connect(cache)
    values = [v for (v,) in db.execute("SELECT value FROM calls")]
    spans = {json.loads(label)["model"]: (low, high) for label, low, high in db.execute(
        "SELECT endpoint, MIN(created), MAX(created) FROM calls WHERE endpoint LIKE '%openai%' GROUP BY endpoint")}
    db.close()
    assert len(values) >= 100 * len(generated)
    # the writers really overlapped: generate's answers were stored while the runs stored their teachers'
    assert spans["m"][0] < spans["teacher-model"][1] and spans["teacher-model"][0] < spans["m"][1], spans
    for value in values:
        Completion.model_validate(json.loads(value))
    for batch in range(len(generated)):
        assert len(list(map(json.loads, (tmp_path / f"out{batch}.jsonl").read_text().splitlines()))) == 100

    db = sqlite3.connect(store)
    runs = dict(db.execute("SELECT name, run_id FROM runs").fetchall())
    per_run = dict(db.execute("SELECT run_id, COUNT(*) FROM results GROUP BY run_id").fetchall())
    db.close()
    assert set(runs) == {"shared-a", "shared-b"}
    assert per_run[runs["shared-a"]] == per_run[runs["shared-b"]] > 0
    for name in runs:
        finished = list((tmp_path / "runs" / name).glob("*/FINISHED"))
        assert len(finished) == 1, name
    assert half_written(tmp_path, skip=(tmp_path / "runs",)) == []
