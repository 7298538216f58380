"""Mid-stage resume: `stillroom run SPEC` with `[budget] checkpoint_steps` is killed with SIGKILL in the middle
of a training stage, once a complete checkpoint exists; `stillroom run SPEC --resume` continues that stage from
its last checkpoint (not from step 0): the stage metrics record `resumed_from_step` > 0, the stage still takes
exactly the budget's optimizer steps, its loss ends where an uninterrupted run's does, and no checkpoint is
left behind once the stage is done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from relkit import PYTHON, cli_env, stillroom, to_toml

MARKER = "stillroom_consumption.json"  # what the engine writes into a checkpoint once it is complete
STEPS = 600


def spec(output_dir: str) -> dict:
    return {
        "name": "midstage", "seed": 0, "output_dir": output_dir,
        "evaluate": {"teacher": False, "base": False},
        "student": {"kind": "quickstart", "shape": {"layers": 1, "hidden": 16, "heads": 2}, "device": "cpu"},
        "data": {"kind": "arithmetic", "train_size": 64, "test_size": 4},
        "budget": {"train_examples": 64, "steps": STEPS, "batch_size": 8, "learning_rate": 5e-3,
                   "checkpoint_steps": 20},
        "methods": [{"kind": "sft"}],
        "evaluators": [{"kind": "exact_match", "limit": 4, "max_tokens": 8}],
    }


def train_metrics(root: Path) -> dict:
    (folder,) = [p for p in (root / "midstage").iterdir() if p.is_dir()]
    return json.loads((folder / "stages" / "methods" / "sft" / "train" / "stage.json").read_text()), folder


def test_kill_inside_a_training_stage_then_resume_continues_from_its_checkpoint(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "home").mkdir()
    env = cli_env(tmp_path)
    (tmp_path / "killed.toml").write_text(to_toml(spec("killed")))
    (tmp_path / "whole.toml").write_text(to_toml(spec("whole")))

    process = subprocess.Popen([PYTHON, "-m", "stillroom.cli", "run", "killed.toml"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    checkpoints: list[Path] = []
    try:
        while time.monotonic() < deadline and process.poll() is None:
            checkpoints = list((tmp_path / "killed").glob(f"midstage/*/checkpoints/**/checkpoint-*/{MARKER}"))
            if checkpoints:
                break
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0].decode(errors="replace")
    assert checkpoints, f"no complete checkpoint appeared before the run ended:\n{output[-3000:]}"
    (run_folder,) = list((tmp_path / "killed" / "midstage").iterdir())
    assert not (run_folder / "stages" / "methods" / "sft" / "train" / ".done").exists(), "killed too late"

    resumed = stillroom(["run", "killed.toml", "--resume"], env, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, str(resumed)
    whole = stillroom(["run", "whole.toml"], env, cwd=tmp_path, timeout=300)
    assert whole.returncode == 0, str(whole)

    after_kill, folder = train_metrics(tmp_path / "killed")
    uninterrupted, _ = train_metrics(tmp_path / "whole")
    assert 0 < after_kill["resumed_from_step"] < STEPS and after_kill["resumed_from_step"] % 20 == 0
    assert uninterrupted["resumed_from_step"] == 0
    assert after_kill["optimizer_steps"] == uninterrupted["optimizer_steps"] == STEPS
    assert after_kill["train_sequences"] == uninterrupted["train_sequences"] == STEPS * 8
    # the data order, the random state and the schedule continue where the checkpoint left them
    assert abs(after_kill["final_loss"] - uninterrupted["final_loss"]) <= 0.05 * max(1.0, uninterrupted["final_loss"])
    assert abs(after_kill["train_loss"] - uninterrupted["train_loss"]) <= 0.05 * max(1.0, uninterrupted["train_loss"])
    history = (folder / "stages" / "methods" / "sft" / "train" / "log_history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in history][-1] == STEPS
    assert not any((folder / "checkpoints").rglob("checkpoint-*")) if (folder / "checkpoints").exists() else True
