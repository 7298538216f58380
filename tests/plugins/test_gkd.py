"""The gkd and on_policy methods on tiny real models: on-policy generation counts, held-out divergence going
down, vocabulary checks, resume, the replacement-loss hook and TRL's on-policy trainers."""

import json

import pytest
import torch

import stillroom
from stillroom import Context, MethodJob, RunDirectory, UserError
from stillroom.specs import Budget
from stillroom.testing import save_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def records(start, count):
    return [{"id": str(i), "prompt": f"What is {i} + 7?", "target": f"The answer is {i + 7}."}
            for i in range(start, start + count)]


DATA = {"train": records(0, 24), "test": records(100, 8)}
FAST = dict(max_new_tokens=6, batch_size=4, learning_rate=5e-3)


@pytest.fixture
def models(stillroom_host, tiny_model_dir, tiny_teacher_dir):
    student = stillroom.build("student", "hf", model=str(tiny_model_dir), device="cpu")
    teacher = stillroom.build("teacher", "hf", model=str(tiny_teacher_dir), device="cpu")
    return student, teacher


@pytest.fixture(scope="module")
def other_vocab_dir(tmp_path_factory):
    """A tiny teacher whose tokenizer has a different vocabulary (300 tokens, not 460)."""
    return save_tiny_model(tmp_path_factory.mktemp("other-vocab") / "model", vocab_size=300)


def job_for(method, student, teacher, run_dir, *, budget=None, label=None, data=DATA):
    return MethodJob(label or method.name, method, teacher, student, data, budget or Budget(), 0,
                     RunDirectory(run_dir), Context(seed=0, cache=None))


def held_out_gjsd(student_model, teacher_model, tokenizer, rows):
    """Mean per-token generalized JSD (beta 0.5) between student and teacher on the targets of ``rows``."""
    gjsd = stillroom.build("loss", "gjsd", beta=0.5)
    total = 0.0
    with torch.no_grad():
        for row in rows:
            prompt = [{"role": "user", "content": row["prompt"]}]
            prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": row["target"]}],
                                                 tokenize=False)
            ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
            labels = ids.clone()
            labels[:, :len(tokenizer(prefix, add_special_tokens=False)["input_ids"])] = -100
            student_logits = student_model(input_ids=ids).logits[:, :-1]
            teacher_logits = teacher_model(input_ids=ids).logits[:, :-1]
            total += gjsd(student_logits, teacher_logits, labels[:, 1:]).item()
    return total / len(rows)


def test_lmbda_one_generates_every_step_and_zero_never(models, tmp_path):
    student, teacher = models
    cases = [(1.0, False, 3, 0), (0.0, False, 0, 0), (0.0, True, 0, 3)]  # seq_kd: the teacher generates
    for lmbda, seq_kd, by_student, by_teacher in cases:
        method = stillroom.build("method", "gkd", lmbda=lmbda, seq_kd=seq_kd, steps=3, **FAST)
        job = job_for(method, student.fresh(), teacher, tmp_path / f"run-{lmbda}-{seq_kd}")
        method.run(job)
        metrics = job.run_dir.stage_metrics("methods/gkd/train")
        assert metrics["steps"] == 3
        assert (metrics["student_generations"], metrics["teacher_generations"]) == (by_student, by_teacher)
        assert metrics["lmbda"] == lmbda and metrics["beta"] == 0.5 and metrics["temperature"] == 0.9
        assert metrics["seq_kd"] == seq_kd and metrics["max_new_tokens"] == 6
        # the teacher runs over every trained sequence; generated tokens go to whoever generated them
        assert metrics["teacher_forward_tokens"] >= metrics["train_tokens"] > 0
        assert (metrics["student_generated_tokens"] > 0) == (by_student > 0)


def test_gkd_lowers_held_out_divergence_and_resumes(models, tmp_path):
    student, teacher = models
    before = held_out_gjsd(student.model, teacher.model, student.tokenizer, DATA["test"])
    method = stillroom.build("method", "gkd", lmbda=0.5, steps=30, **FAST)
    trained = method.run(job_for(method, student.fresh(), teacher, tmp_path / "run"))
    after = held_out_gjsd(trained.model, teacher.model, trained.tokenizer, DATA["test"])
    assert after < 0.8 * before, (before, after)

    run_dir = RunDirectory(tmp_path / "run")
    metrics = run_dir.stage_metrics("methods/gkd/train")
    assert metrics["steps"] == 30 and 0 < metrics["student_generations"] < 30
    assert metrics["train_examples"] == 24 and metrics["loss"] == "trl.generalized_jsd_loss"
    assert not (run_dir.stage_path("methods/gkd/train") / "trainer").exists()  # no checkpoints left behind

    again = method.run(job_for(method, student.fresh(), teacher, tmp_path / "run"))
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e.get("stage") == "methods/gkd/train"] == \
        ["stage_started", "stage_finished", "stage_skipped"]
    for mine, theirs in zip(trained.model.parameters(), again.model.parameters()):
        assert torch.equal(mine, theirs)


def test_budget_overrides_method_options(models, tmp_path):
    student, teacher = models
    method = stillroom.build("method", "gkd", lmbda=0.0, steps=50, batch_size=8, learning_rate=1e-5,
                             max_new_tokens=4)
    budget = Budget(steps=2, batch_size=2, learning_rate=1e-3, train_examples=6)
    job = job_for(method, student.fresh(), teacher, tmp_path / "run", budget=budget)
    method.run(job)
    metrics = job.run_dir.stage_metrics("methods/gkd/train")
    assert (metrics["steps"], metrics["batch_size"], metrics["learning_rate"], metrics["train_examples"]) == \
        (2, 2, 1e-3, 6)


def test_a_registered_loss_can_replace_trls(models, tmp_path):
    """loss = gjsd (our implementation) trains exactly like TRL's built-in generalized JSD."""
    student, teacher = models
    losses = []
    for label, loss in (("builtin", None), ("plugin", {"kind": "gjsd", "beta": 0.5})):
        method = stillroom.build("method", "gkd", lmbda=0.0, steps=3, loss=loss, label=label, **FAST)
        job = job_for(method, student.fresh(), teacher, tmp_path / "run", label=label)
        method.run(job)
        losses.append(job.run_dir.stage_metrics(f"methods/{label}/train")["train_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    with pytest.raises(UserError, match="unknown loss kind"):
        stillroom.build("method", "gkd", loss="jsdd")


def test_teachers_gkd_cannot_use_are_user_errors(models, tmp_path, other_vocab_dir):
    student, _ = models
    other = stillroom.build("teacher", "hf", model=str(other_vocab_dir), device="cpu")
    method = stillroom.build("method", "gkd", steps=1, **FAST)
    with pytest.raises(UserError, match="cross_tokenizer") as error:
        method.run(job_for(method, student.fresh(), other, tmp_path / "run"))
    assert "on_policy" in str(error.value) and "vocab_size 460 (student) != 300 (teacher)" in str(error.value)

    class APITeacher(stillroom.Teacher):
        """A black-box teacher: text only, no logits."""

        name = "api"

    with pytest.raises(UserError, match="white-box teacher.*top-k"):
        method.run(job_for(method, student.fresh(), APITeacher(), tmp_path / "run"))
    assert not (tmp_path / "run" / "stages" / "methods" / "gkd").exists()


def test_on_policy_distillation_runs(models, tmp_path):
    student, teacher = models
    method = stillroom.build("method", "on_policy", steps=2, batch_size=4, learning_rate=1e-3,
                             max_completion_length=6)
    trained = method.run(job_for(method, student.fresh(), teacher, tmp_path / "run"))
    metrics = RunDirectory(tmp_path / "run").stage_metrics("methods/on_policy/train")
    assert metrics["trainer"] == "trl.DistillationTrainer" and metrics["steps"] == 2
    assert metrics["beta"] == 1.0 and metrics["train_loss"] > 0
    assert metrics["optimizer_steps"] == 2 and metrics["train_sequences"] >= 8
    assert metrics["teacher_forward_tokens"] == metrics["train_tokens"] > metrics["student_generated_tokens"] > 0
    changed = any(not torch.equal(a, b) for a, b in zip(trained.model.parameters(), student.model.parameters()))
    assert changed


def test_on_policy_across_tokenizers_uses_gold(models, tmp_path, other_vocab_dir):
    student, _ = models
    other = stillroom.build("teacher", "hf", model=str(other_vocab_dir), device="cpu")
    plain = stillroom.build("method", "on_policy", steps=1)
    with pytest.raises(UserError, match="cross_tokenizer = true"):
        plain.run(job_for(plain, student.fresh(), other, tmp_path / "run"))
    method = stillroom.build("method", "on_policy", cross_tokenizer=True, lmbda=0.5, steps=2, batch_size=4,
                             learning_rate=1e-3, max_completion_length=6, max_length=128)
    method.run(job_for(method, student.fresh(), other, tmp_path / "run"))
    metrics = RunDirectory(tmp_path / "run").stage_metrics("methods/on_policy/train")
    assert metrics["trainer"] == "trl.experimental.gold.GOLDTrainer" and metrics["steps"] == 2
    assert metrics["train_loss"] > 0
    with pytest.raises(UserError, match="uld_options"):
        stillroom.build("method", "on_policy", uld_options={"learning_rate": 1.0})
