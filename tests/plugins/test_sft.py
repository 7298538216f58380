"""The sft and seqkd baselines on tiny sizes: the budget they train with, their stages, and that seqkd's
teacher answers come from the call cache the second time."""

import pytest

import stillroom
from stillroom import Context, MethodJob, RunDirectory, UserError
from stillroom.plugins.sft.methods import resolve_budget
from stillroom.specs import Budget

TINY_TEACHER = {"shape": {"layers": 1, "hidden": 32, "heads": 2},
                "training": {"steps": 30, "batch_size": 16, "warmup_steps": 5, "eval_size": 0}}
TINY_STUDENT = {"shape": {"layers": 1, "hidden": 16, "heads": 2}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data(stillroom_host):
    return stillroom.build("generator", "arithmetic", train_size=40, test_size=10).build_dataset()


def make_job(method, label, data, run_dir, *, teacher=None, budget=None, seed=0):
    context = Context(seed=seed, run_dir=run_dir.root)
    student = stillroom.build("student", "quickstart", context=context, **TINY_STUDENT)
    return MethodJob(label, method, teacher, student.fresh(), data,
                     budget or Budget(train_examples=12, steps=4, batch_size=4, learning_rate=5e-3),
                     seed, run_dir, context)


def test_budget_wins_defaults_fill_in(stillroom_host, data, tmp_path):
    # a conflict between the budget and an option is the core's one check for every method (tests/core)
    method = stillroom.build("method", "sft", batch_size=8)
    job = make_job(method, "sft", data, RunDirectory(tmp_path), budget=Budget(steps=10, learning_rate=1e-3))
    plan = resolve_budget(job, method.config)
    assert (plan.train_examples, plan.steps, plan.batch_size, plan.learning_rate) == (None, 10, 8, 1e-3)
    same = stillroom.build("method", "sft", steps=10)
    assert resolve_budget(job, same.config).steps == 10


def test_sft_trains_on_the_gold_targets_of_the_budgeted_problems(stillroom_host, data, tmp_path):
    import torch

    run_dir = RunDirectory(tmp_path / "run")
    method = stillroom.build("method", "sft")
    assert method.uses_teacher is False
    job = make_job(method, "sft", data, run_dir)
    initial = [p.detach().clone() for p in job.student.model.parameters()]
    trained = method.run(job)
    metrics = run_dir.stage_metrics("methods/sft/train")
    assert metrics["steps"] == 4 and metrics["records"] == 12 and metrics["teacher_requests"] == 0
    assert (run_dir.stage_path("methods/sft/train") / "model" / "config.json").exists()
    assert any(not torch.equal(a, b) for a, b in zip(initial, trained.model.parameters()))
    assert job.summary()["teacher_calls"] == 0

    # a rerun in the same run directory resumes: the stage is skipped and the saved weights load
    again = method.run(make_job(method, "sft", data, run_dir))
    for a, b in zip(trained.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)


def test_seqkd_trains_on_teacher_answers_and_reuses_the_call_cache(stillroom_host, data, tmp_path):
    teacher = stillroom.build("teacher", "quickstart", **TINY_TEACHER)
    method = stillroom.build("method", "seqkd", max_new_tokens=48)
    assert method.uses_teacher is True
    first_dir = RunDirectory(tmp_path / "first")
    job = make_job(method, "seqkd", data, first_dir, teacher=teacher)
    method.run(job)
    answers = stillroom.read_jsonl(first_dir.stage_path("methods/seqkd/teacher_answers") / "records.jsonl")
    chosen = job.train_records()  # the budget's 12 problems in this seed's order
    assert [a["id"] for a in answers] == [r["id"] for r in chosen]
    assert {a["id"] for a in answers} == {r["id"] for r in data["train"][:12]}
    assert all(a["gold_target"] == r["target"] for a, r in zip(answers, chosen))
    expected = teacher.generate([method.teacher_requests([r])[0] for r in chosen[:1]])[0][0].text
    assert answers[0]["target"] == expected  # greedy teacher answers, not the gold
    assert first_dir.stage_metrics("methods/seqkd/teacher_answers")["teacher_requests"] == 12
    assert first_dir.stage_metrics("methods/seqkd/train")["records"] == len([a for a in answers if a["target"].strip()])
    assert job.summary()["teacher_calls"] == 12

    # a new run with the same teacher: every answer is a cache hit, no teacher call is made
    fresh_teacher = stillroom.build("teacher", "quickstart", **TINY_TEACHER)
    second_dir = RunDirectory(tmp_path / "second")
    second = make_job(method, "seqkd", data, second_dir, teacher=fresh_teacher)
    method.run(second)
    assert second_dir.stage_metrics("methods/seqkd/teacher_answers")["teacher_requests"] == 0
    assert fresh_teacher.endpoint.stats["cache_hits"] == 12


def test_seqkd_and_sft_see_the_same_problems_under_one_budget(stillroom_host, data, tmp_path):
    teacher = stillroom.build("teacher", "quickstart", **TINY_TEACHER)
    run_dir = RunDirectory(tmp_path)
    budget = Budget(train_examples=5, steps=2, batch_size=5, learning_rate=1e-3)
    stillroom.build("method", "sft").run(make_job(stillroom.build("method", "sft"), "sft", data, run_dir, budget=budget))
    seqkd = stillroom.build("method", "seqkd", max_new_tokens=48)
    seqkd.run(make_job(seqkd, "seqkd", data, run_dir, teacher=teacher, budget=budget))
    answered = stillroom.read_jsonl(run_dir.stage_path("methods/seqkd/teacher_answers") / "records.jsonl")
    assert sorted(a["prompt"] for a in answered) == sorted(r["prompt"] for r in data["train"][:5])
    assert run_dir.stage_metrics("methods/sft/train")["records"] == 5
    if all(a["target"].strip() for a in answered):  # seqkd drops empty teacher answers
        assert (run_dir.stage_metrics("methods/sft/train")["train_ids_sha256"]
                == run_dir.stage_metrics("methods/seqkd/train")["train_ids_sha256"])
    for label in ("sft", "seqkd"):
        metrics = run_dir.stage_metrics(f"methods/{label}/train")
        assert (metrics["steps"], metrics["batch_size"], metrics["learning_rate"]) == (2, 5, 1e-3)
