"""The one training engine (stillroom.training) seen through the methods: a method's result does not depend on
what ran before it in the process, every method under one budget takes the same optimizer steps on the same
problems, and the consumption metrics add up (the FLOPs formula, token counts checked by hand)."""

import json
import random
import sys

import pytest

import stillroom
from stillroom import Context, MethodJob, RunDirectory
from stillroom.specs import Budget
from stillroom.training import training_arguments

TINY_TEACHER = {"shape": {"layers": 1, "hidden": 32, "heads": 2},
                "training": {"steps": 30, "batch_size": 16, "warmup_steps": 5, "eval_size": 0}}
TINY_STUDENT = {"shape": {"layers": 1, "hidden": 16, "heads": 2}}
BUDGET = Budget(train_examples=8, steps=4, batch_size=4, learning_rate=5e-3)
METHODS = {
    "sft": {},
    "gkd": {"lmbda": 0.5, "max_new_tokens": 6},
    "joint_teaching": {"pseudo_targets": 1, "alpha": 0.5, "max_new_tokens": 6, "eval_examples": 0},
    "step_by_step": {},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def parts(stillroom_host_module):
    data = stillroom.build("generator", "arithmetic", train_size=16, test_size=4).build_dataset()
    teacher = stillroom.build("teacher", "quickstart", **TINY_TEACHER)
    return data, teacher


@pytest.fixture(scope="module")
def stillroom_host_module(tmp_path_factory):
    """One first-party host and one scratch cache for the module: its tests share a tiny teacher and student."""
    from stillroom.plugin_manager import use_host
    from stillroom.testing import OFFLINE_ENV, first_party_host

    folder = tmp_path_factory.mktemp("training")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE_ENV.items():
            patch.setenv(key, value)
        patch.setenv("STILLROOM_CACHE_DIR", str(folder / "cache"))
        patch.setenv("STILLROOM_HOME", str(folder / "home"))
        patch.setenv("STILLROOM_NO_PROGRESS", "1")
        previous = use_host(first_party_host())
        yield
        use_host(previous)


def run(kind: str, run_dir: RunDirectory, data, teacher):
    context = Context(cache=None, seed=0, run_dir=run_dir.root)
    method = stillroom.build("method", kind, **METHODS[kind])
    student = stillroom.build("student", "quickstart", context=context, **TINY_STUDENT)
    job = MethodJob(kind, method, teacher, student.fresh(), data, BUDGET, 0, run_dir, context)
    trained = method.run(job)
    return job, trained


def losses(run_dir: RunDirectory, kind: str) -> list[float]:
    path = run_dir.stage_path(f"methods/{kind}/train") / "log_history.jsonl"
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


def test_a_method_alone_equals_the_same_method_after_three_others(stillroom_host_module, parts, tmp_path):
    import torch

    data, teacher = parts
    alone_dir = RunDirectory(tmp_path / "alone")
    _, alone = run("step_by_step", alone_dir, data, teacher)
    after_dir = RunDirectory(tmp_path / "after")
    for kind in ("sft", "gkd", "joint_teaching"):
        run(kind, after_dir, data, teacher)
    random.random(), torch.rand(3)  # whatever else the process did meanwhile
    _, after = run("step_by_step", after_dir, data, teacher)

    assert losses(alone_dir, "step_by_step") == losses(after_dir, "step_by_step")
    assert len(losses(alone_dir, "step_by_step")) == BUDGET.steps
    for (name, a), b in zip(alone.model.state_dict().items(), after.model.state_dict().values()):
        assert torch.equal(a, b), name
    prompts = [stillroom.GenerationRequest(prompt=r["prompt"], max_tokens=8) for r in data["test"]]
    assert [c[0].text for c in alone.generate(prompts)] == [c[0].text for c in after.generate(prompts)]

    # every method under one budget: the same optimizer steps on the same problems, in the same order
    stages = {kind: after_dir.stage_metrics(f"methods/{kind}/train") for kind in METHODS}
    assert {m["optimizer_steps"] for m in stages.values()} == {BUDGET.steps}
    assert len({m["train_ids_sha256"] for m in stages.values()}) == 1
    assert {m["train_examples"] for m in stages.values()} == {BUDGET.train_examples}
    # step_by_step feeds every problem twice (label and rationale): its sequences count both
    assert stages["step_by_step"]["train_sequences"] == 2 * stages["sft"]["train_sequences"] == 2 * 4 * 4

    # the consumption metrics add up
    for kind, m in stages.items():
        expected = (6 * m["student_parameters"] * m["train_tokens"]
                    + 2 * m["teacher_parameters"] * m["teacher_forward_tokens"]
                    + 2 * m["student_parameters"] * m["student_generated_tokens"])
        assert m["flops_estimate"] == expected and m["wall_seconds"] > 0, kind
        assert m["resumed_from_step"] == 0
        rows = losses(after_dir, kind)
        assert rows and all(isinstance(v, float) for v in rows), kind
    assert stages["sft"]["teacher_forward_tokens"] == stages["sft"]["student_generated_tokens"] == 0
    assert stages["sft"]["teacher_parameters"] == 0
    # GKD runs the teacher over exactly the sequences the student trains on
    assert stages["gkd"]["teacher_forward_tokens"] == stages["gkd"]["train_tokens"] > 0
    assert stages["gkd"]["teacher_parameters"] == sum(p.numel() for p in teacher.model.parameters())
    # joint teaching: the student writes its own targets on every second step, the teacher scores every batch
    assert stages["joint_teaching"]["student_generated_tokens"] > 0
    assert stages["joint_teaching"]["teacher_forward_tokens"] > 0


def test_sft_token_counts_by_hand(stillroom_host_module, parts, tmp_path):
    # 2 steps of 4 over 8 problems: one epoch, every problem once, so the tokens are the encoded lengths
    data, teacher = parts
    context = Context(cache=None, seed=0, run_dir=tmp_path)
    student = stillroom.build("student", "quickstart", context=context, **TINY_STUDENT).fresh()
    records = data["train"][:8]
    result = student.fit(records, steps=2, batch_size=4, learning_rate=1e-3, seed=7, folder=tmp_path)
    lengths = [len(student.encode_example(r)[0]) for r in records]
    assert result["optimizer_steps"] == 2 and result["train_sequences"] == 8
    assert result["train_tokens"] == sum(lengths)
    assert result["flops_estimate"] == 6 * sum(p.numel() for p in student.model.parameters()) * sum(lengths)
    assert [json.loads(line)["step"] for line in (tmp_path / "log_history.jsonl").read_text().splitlines()] == [1, 2]


def test_policy_splits_the_batch_and_picks_precision(monkeypatch, tmp_path):
    import torch

    args = training_arguments(tmp_path, steps=10, batch_size=8, learning_rate=1e-3, seed=3,
                              model=torch.nn.Linear(2, 2), gradient_accumulation_steps=2, warmup_ratio=0.1)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)
    assert args.seed == args.data_seed == 3 and args.max_grad_norm == 1.0 and not args.bf16
    assert args.get_warmup_steps(10) == 1 and args.save_strategy == "no" and args.report_to == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(stillroom.UserError, match="multiple of gradient_accumulation_steps x processes"):
        training_arguments(tmp_path, steps=10, batch_size=6, learning_rate=1e-3, seed=0,
                           model=torch.nn.Linear(2, 2), gradient_accumulation_steps=2)


def test_progress_off_a_terminal_is_a_line_every_tenth(monkeypatch, capsys):
    from stillroom.progress import TrainingProgress

    monkeypatch.delenv("STILLROOM_NO_PROGRESS", raising=False)
    progress = TrainingProgress("sft train", 50, every_seconds=3600)
    for step in range(1, 51):
        progress.update(step, loss=1.0 / step)
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[0].startswith("[sft train] step 5/50, loss 0.2000, ETA ")
    assert lines[-1].startswith("[sft train] step 50/50")
    monkeypatch.setenv("STILLROOM_NO_PROGRESS", "1")
    quiet = TrainingProgress("sft train", 50)
    quiet.update(50, loss=0.1)
    assert capsys.readouterr().err == ""


def test_a_bar_started_during_training_joins_the_training_bar(monkeypatch):
    # rich allows one live display: a generation inside a training step (joint_teaching's student targets go
    # through the call cache, which draws a bar) must add its bar to the training one, not raise LiveError
    import sys

    from stillroom import progress

    monkeypatch.delenv("STILLROOM_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    training = progress.TrainingProgress("train", 10)
    with progress.progress_bar("student calls", 3) as advance:
        assert len(training.bar.tasks) == 2
        advance(3)
    training.update(10, loss=0.5)
    assert len(training.bar.tasks) == 1
    training.close()
    assert progress._LIVE == []


def test_trl_experimental_notice_is_silenced_without_touching_the_environment():
    # plugins used to set TRL_EXPERIMENTAL_SILENCE at import, changing the user's environment for everything
    # that ran after; the engine silences only its own import of TRL's experimental trainers
    import os
    import subprocess
    import sys

    code = ("import os, warnings\n"
            "from trl.import_utils import TRLExperimentalWarning\n"
            "warnings.simplefilter('error', TRLExperimentalWarning)\n"
            "import stillroom.plugins.gkd.gkd, stillroom.plugins.gkd.on_policy, stillroom.plugins.gkd_rl.trainer\n"
            "from stillroom.training import import_trl_experimental\n"
            "assert import_trl_experimental('trl.experimental.gkd').GKDTrainer.__name__ == 'GKDTrainer'\n"
            "assert 'TRL_EXPERIMENTAL_SILENCE' not in os.environ\n"
            "try:\n"
            "    warnings.warn('still an error', TRLExperimentalWarning)\n"
            "except TRLExperimentalWarning:\n"
            "    print('filters restored')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRL_EXPERIMENTAL_SILENCE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "filters restored", out.stderr[-2000:]


def learning_rates(run_dir: RunDirectory, kind: str) -> list[float]:
    path = run_dir.stage_path(f"methods/{kind}/train") / "log_history.jsonl"
    return [json.loads(line)["learning_rate"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_the_budget_warm_up_reaches_every_method(kind, stillroom_host_module, parts, tmp_path, monkeypatch):
    """``budget.warmup_ratio`` is one schedule for all: the rate rises over the first half of 4 steps, where
    without it every method starts at its peak and decays."""
    data, teacher = parts
    plain = learning_rates(run(kind, RunDirectory(tmp_path / "plain"), data, teacher)[0].run_dir, kind)
    monkeypatch.setattr(sys.modules[__name__], "BUDGET", BUDGET.model_copy(update={"warmup_ratio": 0.5}))
    warmed = learning_rates(run(kind, RunDirectory(tmp_path / "warm"), data, teacher)[0].run_dir, kind)
    # the rate each step used: without warm-up the peak first, then a linear decay; with it, 0 then up to the peak
    assert plain[0] == pytest.approx(BUDGET.learning_rate) and plain[0] > plain[1] > plain[-1]
    assert warmed[0] == 0 and warmed[0] < warmed[1] < warmed[2] == pytest.approx(BUDGET.learning_rate)
