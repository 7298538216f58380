"""The quickstart end to end, in its fast variant: `stillroom quickstart --fast` through the CLI, then the
same spec again through stillroom.runs.execute, which must reuse the cached teacher and every teacher answer."""

import json
import os
from pathlib import Path

import pytest

from stillroom.plugins.synthetic import models as quickstart_models
from stillroom.plugins.synthetic import quickstart

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("sft", "seqkd", "gkd", "step_by_step", "joint_teaching", "lion")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from more threads, and on a shared CI box extra threads stall each other."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_examples_quickstart_links_to_the_packaged_spec(stillroom_host):
    from stillroom.specs import load_spec

    link = ROOT / "examples" / "quickstart.toml"
    assert link.is_symlink() and os.readlink(link) == "../plugins/synthetic/quickstart.toml"
    assert link.resolve() == quickstart.SPEC_PATH.resolve()
    spec = load_spec(link, stillroom_host)
    assert spec.teacher.kind == "quickstart" and spec.student.kind == "quickstart" and spec.data.kind == "arithmetic"
    assert [m.kind for m in spec.methods] == list(METHODS)
    assert spec.data.test_size >= 200
    assert spec.teacher.task == spec.data.difficulty  # the teacher knows the task the data comes from
    budget = spec.budget
    assert None not in (budget.train_examples, budget.steps, budget.batch_size, budget.learning_rate)
    assert len(spec.seeds) >= 3  # every method at three seeds, compared with sft
    # the base student is pretrained on generic text of the domain, never on the task's problems
    assert spec.student.pretraining is not None
    assert spec.student.pretraining.corpus.operations < spec.data.difficulty.operations
    methods = {m.kind: m for m in spec.methods}
    assert methods["gkd"].lmbda == 1.0  # on-policy, the GKD paper's best; the divergence chosen on validation
    assert methods["step_by_step"].rationales == "teacher"  # the teacher's rationales, not gold ones
    assert spec.data.validation_size > 0
    assert methods["lion"].heldout["split"] == "validation"  # choices never look at the test split


def test_fast_variant_only_shrinks_sizes(stillroom_host):
    from stillroom.specs import validate_spec

    full, fast = quickstart.packaged_spec(), quickstart.fast_spec()
    assert [m["kind"] for m in fast["methods"]] == [m["kind"] for m in full["methods"]]
    assert fast["data"]["test_size"] < full["data"]["test_size"]
    assert fast["budget"]["steps"] < full["budget"]["steps"]
    assert fast["budget"]["learning_rate"] == full["budget"]["learning_rate"]
    validate_spec(fast, stillroom_host)


def rows_by_model(rows, metric="exact_match"):
    """Leaderboard rows of one metric keyed by subject: teacher, base, or the method label."""
    return {r["model"].rsplit("/", 1)[-1]: r for r in rows if r["metric"] == metric}


def test_quickstart_fast_end_to_end_then_from_the_caches(stillroom_host, tmp_path, monkeypatch, capsys):
    from stillroom.cli import main
    from stillroom.leaderboard import pivot
    from stillroom.runs import execute
    from stillroom.results import ResultsStore

    runs = tmp_path / "my-runs"
    pretrainings = quickstart_models.PRETRAININGS
    main(["quickstart", "--fast", "--jobs", "1", "--output-dir", str(runs)])
    printed = capsys.readouterr().out
    print(printed)
    assert "quickstart leaderboard" in printed and "finished in" in printed
    assert quickstart_models.PRETRAININGS == pretrainings + 1  # the base student, pretrained once
    starts = {line.split()[0] for line in printed.splitlines() if line.strip()}
    assert starts >= {"teacher", "base", *METHODS}  # one pivoted row per entry
    with ResultsStore.default() as store:
        first = store.rows(latest=False)
    run_dirs = list((runs / "quickstart-fast").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "FINISHED").exists()
    models = rows_by_model(first)
    assert set(models) == {"teacher", "base", *METHODS}
    assert {r["metric"] for r in first} == {"exact_match", "rationale_rougeL"}
    for name, row in models.items():
        assert row["n"] == 40 and row["ci_low"] <= row["value"] <= row["ci_high"]
        if name in METHODS:  # three seeds each, and a verdict against sft
            assert row["seeds"] == [0, 1, 2] and row["reference"] == "quickstart-fast/sft"
            assert (row["verdict"] is None) == (name == "sft")
            assert row["verdict"] in (None, "better", "worse", "no difference detected")
    # one plain sentence per verdict that found a difference, and none for the others
    entries = pivot([r for r in first if r["run_id"] == models["sft"]["run_id"]])
    expected = quickstart.verdict_sentences(entries)
    found = [e for e in entries if e["role"] == "method"
             for m in e["metrics"].values() if m.get("verdict") in ("better", "worse")]
    assert len(expected) == len(found)
    flat = " ".join(printed.split())
    for sentence in expected:
        assert " ".join(sentence.split()) in flat
    assert models["sft"]["teacher_calls"] == 0
    assert models["seqkd"]["teacher_calls"] == 64  # the budget's train_examples, answered once each
    assert models["sft"]["wall_seconds"] > 0
    for method in ("gkd", "joint_teaching", "lion"):
        assert models[method]["teacher_calls"] is not None

    # Again, straight through execute: the teacher and the base student must load from the cache, and the
    # teacher answer from the call cache.
    def no_training(*args, **kwargs):
        raise AssertionError("the cached teacher was trained again")

    monkeypatch.setattr(quickstart_models, "train_teacher", no_training)
    spec = tmp_path / "fast.json"
    spec.write_text(json.dumps(quickstart.fast_spec()))
    run = execute(spec, output_dir=runs, seeds=[0])  # one seed is enough to show the caches at work
    assert quickstart_models.PRETRAININGS == pretrainings + 1  # the cached base: no second pretraining
    assert run.dir.root.parent == runs / "quickstart-fast"
    with ResultsStore.default() as store:
        second = rows_by_model(store.rows(run_id=run.id, latest=False))
    # the same teacher answers are used (teacher_calls counts them), none is paid for again
    assert second["seqkd"]["teacher_calls"] == 64 and second["seqkd"]["teacher_calls_paid"] == 0
    assert second["teacher"]["value"] == models["teacher"]["value"]
    # same budget, same seed: the same student, whichever other seeds the run trains
    assert second["sft"]["value"] == models["sft"]["per_seed"]["0"]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("STILLROOM_FULL_QUICKSTART"),
                    reason="minutes of training; set STILLROOM_FULL_QUICKSTART=1 (or run `make demo`)")
def test_full_quickstart_separates_teacher_baselines_and_base(stillroom_host, tmp_path):
    """The real quickstart (several minutes on 2 cores): the leaderboard the issue promises."""
    import time

    from stillroom import paths

    started = time.time()
    run, rows, seconds = quickstart.run_quickstart(tmp_path, jobs="auto")
    trained = [f for f in (paths.cache_dir() / "models").glob("quickstart-*/training.json")
               if f.stat().st_mtime >= started]  # this run built the teacher or the base: the issue allows 3 more minutes
    models = rows_by_model(rows)
    teacher, base = models["teacher"]["value"], models["base"]["value"]
    assert teacher >= 0.90
    assert set(models) == {"teacher", "base", *METHODS}
    for method in METHODS:
        assert models[method]["value"] > 0.03  # above a constant-answer guess
        assert len(models[method]["seeds"]) >= 3 and (method == "sft" or models[method]["verdict"] is not None)
    best = max(models[m]["value"] for m in METHODS)
    assert teacher > best
    assert (best - base) / (teacher - base) >= 0.60, "the best student should close 60% of the teacher-base gap"
    limit = 300 + (180 if trained else 0)
    assert seconds <= limit, f"the quickstart took {seconds:.0f} s; the issue allows {limit} s on 2 cores"
