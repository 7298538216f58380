"""What MethodJob gives every method: seeded stages, mid-stage checkpoint folders, the budget's records, sums."""

from __future__ import annotations

import random

import pytest

from stillroom.roles import Context
from stillroom.training import MethodJob, derive_seed
from stillroom.rundir import RunDirectory
from stillroom.specs import Budget


def _job(tmp_path, label="m", seed=0, seeded=False, train_examples=5):
    data = {"train": [{"id": f"r{i}", "prompt": str(i), "target": str(i)} for i in range(8)]}
    return MethodJob(label, None, None, None, data, Budget(train_examples=train_examples), seed,
                     RunDirectory(tmp_path / "run"), Context(run_dir=tmp_path / "run"), seeded=seeded)


def test_stages_are_seeded_from_entry_seed_and_stage_name(tmp_path):
    job = _job(tmp_path, seed=3)
    random.seed(12345)  # whatever ran before in this process
    job.stage("train", lambda folder: {"draw": random.random()})
    assert job.stage_metrics("train")["draw"] == random.Random(derive_seed(3, "train")).random()
    # another label, the same seed and stage: the same draw (the label is not part of the stage seed)
    other = _job(tmp_path, label="other", seed=3, seeded=True)
    other.stage("train", lambda folder: {"draw": random.random()})
    assert other.stage_metrics("train")["draw"] == job.stage_metrics("train")["draw"]
    assert other.stage_path("train") == tmp_path / "run/stages/methods/other/seed3/train"
    assert job.stage_path() == tmp_path / "run/stages/methods/m"


def test_checkpoint_folder_survives_a_crash_and_goes_when_the_stage_is_done(tmp_path):
    job = _job(tmp_path)
    folder = job.checkpoint_dir("train")
    assert folder == tmp_path / "run/checkpoints/methods/m/train" and folder.is_dir()

    def crash(out):
        (job.checkpoint_dir("train") / "step-10").write_text("state")
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        job.stage("train", crash)
    assert (folder / "step-10").read_text() == "state"  # a restarted stage finds it (.partial is wiped)
    job.stage("train", lambda out: {"resumed_from": (job.checkpoint_dir("train") / "step-10").read_text()})
    assert job.stage_metrics("train")["resumed_from"] == "state" and not folder.exists()


def test_train_records_same_ids_for_every_method_order_by_seed(tmp_path):
    a, b, c = _job(tmp_path, "a", seed=1), _job(tmp_path, "b", seed=1), _job(tmp_path, "c", seed=2)
    ids = [r["id"] for r in a.train_records()]
    assert ids == [r["id"] for r in b.train_records()]  # same seed, another method: same records, same order
    assert sorted(ids) == [f"r{i}" for i in range(5)]  # the budget's first 5
    assert sorted(r["id"] for r in c.train_records()) == sorted(ids) and [r["id"] for r in c.train_records()] != ids
    assert len(_job(tmp_path, train_examples=None).train_records()) == 8


def test_summary_sums_budget_columns_and_leaves_unmeasured_ones_empty(tmp_path):
    job = _job(tmp_path)
    job.stage("answers", lambda out: {"teacher_tokens": 40})
    job.stage("train", lambda out: {"optimizer_steps": 10, "train_tokens": 512, "flops_estimate": 1.5e6})
    job.stage("more", lambda out: {"optimizer_steps": 5, "train_tokens": 256, "flops_estimate": 0.5e6})
    summary = job.summary()
    assert (summary["optimizer_steps"], summary["train_tokens"], summary["flops_estimate"]) == (15, 768, 2e6)
    assert summary["teacher_tokens"] == 40 and summary["teacher_calls"] == 0  # measured by the stage: 0 calls
    assert summary["teacher_forward_tokens"] is None and summary["wall_seconds"] >= 0
