"""Scale-out: `accelerate launch --multi_gpu --num_processes 2 -m stillroom.cli run SPEC` on a CPU-only machine
trains every method (sft, seqkd, gkd, step_by_step, joint_teaching, lion) on tiny models with two processes
(DDP over gloo; accelerate's `--cpu` flag would start a single process), all through the one training engine.
A probe loss, installed as a third-party plugin on PYTHONPATH, wraps the losses plugin's forward KL and records
which process called it with how many rows: both ranks must have trained in one process group on half of each
batch. Every training stage's metrics say the same for its method: two processes, half a batch per process,
and sequences summed over both ranks equal to steps x batch (x2 for step_by_step's two tasks). The run
directory, the models and the leaderboard rows must be written once. README's "Scaling out" section must
document accelerate (DeepSpeed/FSDP configs) and vLLM-served teachers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from relkit import ROOT, cli_env, free_port, half_written, read_events, stillroom, to_toml

from stillroom.testing import install_plugin

ACCELERATE = ROOT / ".venv" / "bin" / "accelerate"

PROBE = '''
"""A loss that is the losses plugin's forward KL and appends who called it to STILLROOM_REL_PROBE_DIR."""
import json
import os

from stillroom import ComponentConfig, Loss, build, hookimpl


class RankProbe(Loss):
    """Forward KL that records the calling process's rank and process group."""

    name = "rank_probe"

    class Config(ComponentConfig):
        pass

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        self.inner = build("loss", "forward_kl")

    def __call__(self, student_logits, teacher_logits=None, labels=None, **options):
        import torch.distributed as dist

        ready = dist.is_available() and dist.is_initialized()
        record = {"rank": int(os.environ.get("RANK", "0")), "pid": os.getpid(), "initialized": ready,
                  "world_size": dist.get_world_size() if ready else 1,
                  "backend": dist.get_backend() if ready else None, "rows": int(student_logits.shape[0])}
        path = os.path.join(os.environ["STILLROOM_REL_PROBE_DIR"], "rank%d.jsonl" % record["rank"])
        with open(path, "a") as out:
            out.write(json.dumps(record) + "\\n")
        return self.inner(student_logits, teacher_logits, labels, **options)


@hookimpl
def stillroom_register_losses(register):
    register(RankProbe)
'''


def _install_probe(site: Path) -> None:
    install_plugin(site, "stillroom-rank-probe", "0.1", {"rank_probe": "stillroom_rank_probe"},
                   {"stillroom_rank_probe": PROBE})


TINY_TEACHER = {"kind": "quickstart", "shape": {"layers": 1, "hidden": 32, "heads": 2}, "device": "cpu",
                "training": {"steps": 30, "batch_size": 16, "warmup_steps": 5, "eval_size": 0}}
TINY_STUDENT = {"kind": "quickstart", "shape": {"layers": 1, "hidden": 16, "heads": 2}, "device": "cpu"}


def _build_quickstart_models(cache: Path, monkeypatch) -> None:
    """Train the tiny quickstart teacher into ``cache`` before the launch: a model the cache builds on first use
    must not be trained inside a multi-process launch (each rank would join the other's training)."""
    import stillroom as api

    monkeypatch.setenv("STILLROOM_CACHE_DIR", str(cache))
    for role, options in (("teacher", TINY_TEACHER), ("student", TINY_STUDENT)):
        api.build(role, options["kind"], **{k: v for k, v in options.items() if k != "kind"})


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate is not installed in .venv")
def test_every_method_under_accelerate_two_cpu_processes(tmp_path, monkeypatch):
    site, probes = tmp_path / "site", tmp_path / "probes"
    probes.mkdir()
    _install_probe(site)
    spec = {
        "name": "two-ranks", "seed": 0, "output_dir": "runs",
        "evaluate": {"teacher": False, "base": False},
        "teacher": TINY_TEACHER,
        "student": TINY_STUDENT,
        "data": {"kind": "arithmetic", "train_size": 16, "test_size": 2},
        "budget": {"train_examples": 8, "steps": 2, "batch_size": 4, "learning_rate": 1e-3},
        "methods": [
            {"kind": "sft"},
            {"kind": "seqkd", "max_new_tokens": 8},
            {"kind": "gkd", "lmbda": 0.5, "max_new_tokens": 8, "loss": {"kind": "rank_probe"}},
            {"kind": "step_by_step"},
            {"kind": "joint_teaching", "pseudo_targets": 1, "alpha": 0.5, "max_new_tokens": 8, "eval_examples": 0},
            {"kind": "lion", "iterations": 2, "referee": {"kind": "arithmetic_referee"},
             "instruction_generator": {"kind": "arithmetic_variations"}, "student_sampling": {"max_tokens": 8},
             "teacher_sampling": {"max_tokens": 8}},
        ],
        "evaluators": [{"kind": "exact_match", "limit": 2, "max_tokens": 4}],
    }
    (tmp_path / "spec.toml").write_text(to_toml(spec))
    (tmp_path / "cache").mkdir()
    (tmp_path / "home").mkdir()
    _build_quickstart_models(tmp_path / "cache", monkeypatch)
    env = cli_env(tmp_path, PYTHONPATH=str(site), STILLROOM_REL_PROBE_DIR=str(probes), CUDA_VISIBLE_DEVICES="")
    # `--cpu` makes accelerate start one process (several CPU processes need mpirun); `--multi_gpu` starts
    # them through torchrun, and the Trainer's use_cpu (the gkd method sets it for CPU models) picks gloo.
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "stillroom.cli", "run", "spec.toml"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"accelerate launch ran past 480 s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-6000:]

    # both ranks trained, in one gloo process group of two, on half a batch each
    calls = {rank: [json.loads(line) for line in (probes / f"rank{rank}.jsonl").read_text().splitlines()]
             for rank in (0, 1)}
    for rank, rows in calls.items():
        assert rows and all(r["initialized"] and r["world_size"] == 2 and r["backend"] == "gloo" for r in rows), rows
        assert all(r["rows"] == 2 for r in rows), rows  # batch_size 4 over two processes
    assert {r["pid"] for r in calls[0]}.isdisjoint({r["pid"] for r in calls[1]})
    assert len(calls[0]) == len(calls[1])

    # written once: one run directory, one model, each stage finished once, one set of leaderboard rows
    runs = list((tmp_path / "runs" / "two-ranks").iterdir())
    assert len(runs) == 1 and (runs[0] / "FINISHED").exists(), runs
    folder = runs[0]
    finished = [e["stage"] for e in read_events(folder) if e["event"] == "stage_finished"]
    assert len(finished) == len(set(finished)) and "methods/gkd/train" in finished, finished
    assert sum(e["event"] == "run_finished" for e in read_events(folder)) == 1
    # (lion's iteration 1 also keeps its optimizer state, with weights, for iteration 2: skipped here)
    models = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("model.safetensors")
                    if "optimizer_state" not in p.parts)
    trained = ["sft/train", "seqkd/train", "gkd/train", "step_by_step/train", "joint_teaching/train",
               "lion/iter1/train", "lion/iter2/train"]
    assert models == sorted(f"stages/methods/{stage}/model/model.safetensors" for stage in trained), models
    assert not list(folder.rglob("*.partial")) and not list(folder.rglob("*rank*"))
    assert not (folder / "checkpoints").exists() or not any((folder / "checkpoints").rglob("checkpoint-*"))
    for stage in trained:
        metrics = json.loads((folder / "stages" / "methods" / stage / "stage.json").read_text())
        steps = 1 if stage.startswith("lion") else 2  # lion splits the budget's steps over its iterations
        per_problem = 2 if stage.startswith("step_by_step") else 1  # label and rationale sequences
        assert metrics["world_size"] == 2 and metrics["per_device_batch_size"] == 2, (stage, metrics)
        assert metrics["optimizer_steps"] == steps, (stage, metrics)
        # summed over both ranks: each rank trained half of each batch, not the whole batch
        assert metrics["train_sequences"] == steps * 4 * per_problem, (stage, metrics)
        assert metrics["rank0_sequences"] * 2 == metrics["train_sequences"], (stage, metrics)
        assert metrics["train_tokens"] > 0 and metrics["flops_estimate"] > 0, (stage, metrics)
    lion2 = json.loads((folder / "stages" / "methods" / "lion" / "iter2" / "train" / "stage.json").read_text())
    assert lion2["continued_from_step"] == 1  # one optimizer and schedule across lion's iterations
    board = stillroom(["leaderboard", "--format", "json", "--history"], cli_env(tmp_path), cwd=tmp_path, timeout=120)
    rows = json.loads(board.stdout)
    assert rows and len({(r["model"], r["evaluator"], r["metric"]) for r in rows}) == len(rows)
    assert {r["run_id"] for r in rows} == {folder.name}
    assert half_written(tmp_path, skip=(tmp_path / "runs",)) == []


def test_readme_documents_scaling_out():
    text = (ROOT / "README.md").read_text()
    assert "### Scaling out" in text
    section = text.split("### Scaling out", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    for needle in ("accelerate launch", "--num_processes", "DeepSpeed", "--config_file", "vllm serve",
                   "base_url", "stillroom serve"):
        assert needle in section, needle
