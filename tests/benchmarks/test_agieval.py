"""The agieval evaluator against the local mirror (STILLROOM_DATA): the converted tasks and prompts, upstream
quirks, the lion protocol, and parity of the lm_eval variant with lm-eval called directly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stillroom import UserError
from stillroom.benchmarks.harness import agieval_tasks as task_files

DATA = Path(os.environ.get("STILLROOM_DATA") or "/nonexistent").resolve() / "agieval"
pytestmark = [pytest.mark.skipif(not DATA.is_dir(), reason="needs the AGIEval mirror (STILLROOM_DATA)"),
              pytest.mark.usefixtures("benchmark_host")]
ENGLISH_MC = {"aqua-rat": 254, "logiqa-en": 651, "lsat-ar": 230, "lsat-lr": 510, "lsat-rc": 269,
              "sat-en-without-passage": 206, "sat-en": 206, "sat-math": 220}


@pytest.fixture(scope="module")
def folder():
    return task_files.prepare("lm_eval", task_files.all_tasks(), DATA)


def _records(folder, task):
    path = folder.include_dir.parent / "data" / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_task_and_example_counts(folder):
    assert sorted(folder.tasks.values()) == sorted(ENGLISH_MC)
    assert {t: len(_records(folder, t)) for t in ENGLISH_MC} == ENGLISH_MC
    assert sum(folder.counts.values()) == 2546


def test_records_take_the_hub_layout(folder):
    for task in ENGLISH_MC:
        upstream = [json.loads(line) for line in (DATA / "v1_1" / f"{task}.jsonl").read_text().splitlines()]
        for source, record in zip(upstream, _records(folder, task)):
            assert record["choices"] == source["options"]
            assert record["gold"] == ["ABCDE".index(source["label"])]
            assert record["query"].endswith(f"A: Among A through {'ABCDE'[len(source['options']) - 1]}, the answer is")
    first = _records(folder, "lsat-ar")[0]
    source = json.loads((DATA / "v1_1" / "lsat-ar.jsonl").read_text().splitlines()[0])
    assert first["query"] == (source["passage"] + "Q: " + source["question"] + " Answer Choices: "
                              + " ".join(source["options"]) + "\nA: Among A through E, the answer is")
    # no passage (null in the file, and no passage at all in sat-en-without-passage): the query opens with Q:
    assert all(r["query"].startswith("Q: ") for r in _records(folder, "sat-en-without-passage"))
    assert all(r["query"].startswith("Q: ") for r in _records(folder, "aqua-rat"))


def test_conversion_quirks_and_errors(tmp_path):
    record = {"passage": None, "question": "Which?", "options": ["(A)x", "(B)y", "(C)z", "(D)w"], "label": ["C"],
              "other": None}  # jec-qa style list label, no 'answer' key (as in sat-*)
    assert task_files.convert_record(record, "f:1") == {
        "query": "Q: Which? Answer Choices: (A)x (B)y (C)z (D)w\nA: Among A through D, the answer is",
        "choices": ["(A)x", "(B)y", "(C)z", "(D)w"], "gold": [2]}
    with pytest.raises(UserError, match="label 'E' is not one of the 4 option letters"):
        task_files.convert_record({**record, "label": "E"}, "f:1")
    bad = tmp_path / "v1_1"
    bad.mkdir()
    (bad / "lsat-ar.jsonl").write_text(json.dumps(record) + "\n{not json\n")
    with pytest.raises(UserError) as error:
        task_files.read_upstream(tmp_path, "lsat-ar")
    assert error.value.location.endswith("lsat-ar.jsonl:2")
    (bad / "math.jsonl").write_text(json.dumps({"question": "1+1?", "options": None, "label": None}) + "\n")
    with pytest.raises(UserError, match="multiple-choice"):
        task_files.read_upstream(tmp_path, "math")


def test_config_errors_a_user_can_fix(tmp_path):
    from stillroom import build

    with pytest.raises(UserError, match="unknown AGIEval task 'lsat-xx'"):
        build("evaluator", "agieval", tasks=["lsat-xx"]).selected_tasks()
    assert build("evaluator", "agieval", tasks=["lsat_ar"]).selected_tasks() == ["lsat-ar"]
    with pytest.raises(UserError, match="no such folder"):
        build("evaluator", "agieval", data_dir=str(tmp_path / "nowhere")).source_files()
    assert build("evaluator", "agieval", tasks="sat-math").source_files() == [DATA / "v1_1" / "sat-math.jsonl"]


def test_lm_eval_variant_matches_lm_eval_directly(tiny_subject):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from stillroom import build

    evaluator = build("evaluator", "agieval", tasks=["aqua-rat", "sat-math"], limit=6)
    ours = evaluator.evaluate(tiny_subject)
    folder = evaluator.prepare()
    direct = lm_eval.simple_evaluate(
        model=HFLM(pretrained=tiny_subject.model, tokenizer=tiny_subject.tokenizer, batch_size=8),
        tasks=[folder.group], task_manager=TaskManager(include_path=str(folder.include_dir), include_defaults=False),
        limit=6, bootstrap_iters=0, fewshot_as_multiturn=False, apply_chat_template=False)
    rows = {m.metric: m for m in ours.metrics}
    assert set(rows) == {f"agieval{t}/{m}" for t in ("", "/aqua-rat", "/sat-math") for m in ("acc", "acc_norm")}
    for metric in ("acc", "acc_norm"):
        assert rows[f"agieval/{metric}"].value == direct["results"][folder.group][f"{metric},none"]
        assert rows[f"agieval/{metric}"].n == 12
        for name, task in folder.tasks.items():
            assert rows[f"agieval/{task}/{metric}"].value == direct["results"][name][f"{metric},none"]
            assert rows[f"agieval/{task}/{metric}"].n == 6
    # the scores are real log-likelihood comparisons, not constants
    assert len({s["acc"] for s in ours.samples} | {s["acc_norm"] for s in ours.samples}) == 2


def test_lion_variant_generates_and_extracts_letters(tiny_subject):
    from stillroom import build

    result = build("evaluator", "agieval", variant="lion", tasks=["sat-math"], limit=3,
                   max_gen_toks=4).evaluate(tiny_subject)
    assert {m.metric for m in result.metrics} == {"agieval/acc", "agieval/sat-math/acc"}
    assert len(result.samples) == 3
    assert all(s["target"] in "ABCD" and s["prompt"].endswith("the answer is") for s in result.samples)


def test_api_model_cannot_run_the_log_likelihood_variant(api_subject):
    from stillroom import build

    with pytest.raises(UserError, match="log-likelihood"):
        build("evaluator", "agieval", tasks=["sat-math"], limit=2).evaluate(api_subject)
