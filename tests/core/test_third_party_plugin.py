"""The path a third-party author takes: pip-install the example plugin, then run a spec that uses it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins" / "stillroom-hello"


@pytest.fixture(scope="module")
def hello_installed():
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(EXAMPLE)]
    done = subprocess.run(pip, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "-y", "stillroom-hello"], capture_output=True)


def test_installed_plugin_runs_in_a_spec(hello_installed, tmp_path, stillroom_env, tiny_model_dir, tiny_teacher_dir):
    env = {**os.environ, "STILLROOM_RAISE_ERRORS": "1"}
    listed = subprocess.run([sys.executable, "-m", "stillroom.cli", "plugins", "list", "--json"], capture_output=True,
                            text=True, env=env)
    rows = json.loads(listed.stdout)
    assert {"plugin": "hello", "role": "loss", "kind": "hello_ce", "version": "0.1.0", "status": "ok"} in rows
    assert {"plugin": "hello", "role": "evaluator", "kind": "hello_length", "version": "0.1.0", "status": "ok"} in rows

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "target": f"The answer is {i + 1}."}) + "\n"
                            for i in range(12)))
    spec = tmp_path / "hello.toml"
    spec.write_text(f"""
name = "hello"
[teacher]
kind = "hf"
model = "{tiny_teacher_dir}"
[student]
kind = "hf"
model = "{tiny_model_dir}"
[data]
kind = "file"
path = "{data}"
test_size = 4
[budget]
steps = 3
[[methods]]
kind = "hello_kd"
loss = {{ kind = "hello_ce", scale = 2.0 }}
[[evaluators]]
kind = "hello_length"
limit = 4
""")
    schema = subprocess.run([sys.executable, "-m", "stillroom.cli", "spec", "schema"], capture_output=True, text=True, env=env)
    assert '"const": "hello_kd"' in schema.stdout and '"const": "hello_length"' in schema.stdout

    run = subprocess.run([sys.executable, "-m", "stillroom.cli", "run", str(spec)], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    board = subprocess.run([sys.executable, "-m", "stillroom.cli", "leaderboard", "--format", "json", "--long"],
                           capture_output=True, text=True, env=env)
    rows = json.loads(board.stdout)
    assert {(r["model"], r["evaluator"], r["metric"]) for r in rows} >= {
        ("hello/hello_kd", "hello_length", "words"), ("hello/teacher", "hello_length", "words"),
        ("hello/base", "hello_length", "words")}
    train = next((tmp_path / "runs" / "hello").glob("*/stages/methods/hello_kd/train/stage.json"))
    metrics = json.loads(train.read_text())
    assert metrics["steps"] == 3 and metrics["first_loss"] > 0
