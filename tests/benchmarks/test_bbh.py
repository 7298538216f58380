"""The bbh evaluator against the local mirror (STILLROOM_DATA): what the converters produce, the upstream
quirks, the lion protocol's lettered options, and parity of the lm_eval variant with lm-eval called directly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stillroom import Context, UserError
from stillroom.benchmarks.harness import bbh_tasks as task_files
from stillroom.benchmarks.harness.answer_letters import INVALID, choice_letter, option_letters

DATA = Path(os.environ.get("STILLROOM_DATA") or "/nonexistent").resolve() / "bbh"
pytestmark = [pytest.mark.skipif(not DATA.is_dir(), reason="needs the BBH mirror (STILLROOM_DATA)"),
              pytest.mark.usefixtures("benchmark_host")]


def _records(folder, task: str) -> list[dict]:
    path = folder.include_dir.parent / "data" / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def lm_eval_folder():
    return task_files.prepare("lm_eval", task_files.tasks_for("lm_eval"), DATA)


@pytest.fixture(scope="module")
def lion_folder():
    return task_files.prepare("lion", task_files.tasks_for("lion"), DATA)


def test_task_and_example_counts(lm_eval_folder, lion_folder):
    assert len(lm_eval_folder.tasks) == 27
    assert sum(len(_records(lm_eval_folder, t)) for t in lm_eval_folder.tasks.values()) == 6511
    assert len(lion_folder.tasks) == 23
    assert set(lm_eval_folder.tasks.values()) - set(lion_folder.tasks.values()) == set(task_files.FREE_FORM)
    assert sum(len(_records(lion_folder, t)) for t in lion_folder.tasks.values()) == 5511
    assert sum(lion_folder.counts.values()) == 5511 and lion_folder.counts["penguins_in_a_table"] == 146


def test_lm_eval_variant_keeps_the_data_verbatim(lm_eval_folder):
    upstream = json.loads((DATA / "tasks" / "movie_recommendation.json").read_text())["examples"]
    assert _records(lm_eval_folder, "movie_recommendation") == upstream
    yaml_text = (lm_eval_folder.include_dir / "stillroom_bbh_snarks.yaml").read_text()
    assert "bbh/zeroshot/snarks.yaml" in yaml_text and "dataset_name: null" in yaml_text


def test_lion_records_are_lettered_multiple_choice(lion_folder):
    for task in lion_folder.tasks.values():
        for record in _records(lion_folder, task):
            letters = option_letters(len(record["choices"]))
            assert record["target"] in letters, (task, record)
            option = f"({record['target']}) {record['choices'][letters.index(record['target'])]}"
            assert option in record["input"]


def test_lion_two_way_tasks_get_lettered_options(lion_folder):
    navigate = _records(lion_folder, "navigate")
    assert all(r["input"].endswith("\nOptions:\n(A) Yes\n(B) No") and "\n- Yes" not in r["input"] for r in navigate)
    upstream = json.loads((DATA / "tasks" / "sports_understanding.json").read_text())["examples"]
    sports = _records(lion_folder, "sports_understanding")
    assert [r["target"] for r in sports] == [{"yes": "A", "no": "B"}[e["target"]] for e in upstream]
    assert sports[0]["choices"] == ["yes", "no"]
    formal = _records(lion_folder, "formal_fallacies")[0]
    assert formal["input"].endswith("deductively valid or invalid?\nOptions:\n(A) valid\n(B) invalid")


def test_lion_repairs_options_split_on_commas(lion_folder):
    movies = [r for r in _records(lion_folder, "movie_recommendation") if r["repaired"]]
    assert len(movies) == 1
    (movie,) = movies
    assert movie["choices"][0] == "Monsters, Inc" and movie["target"] == "A" and len(movie["choices"]) == 4
    assert "(A) Monsters, Inc\n(B) Children of the Night" in movie["input"]
    names = {r["choices"][ord(r["target"]) - 65] for r in _records(lion_folder, "ruin_names") if r["repaired"]}
    assert names == {"dearth, wind, & fire", "rita, sue and bob poo"}
    truncated = [r for r in _records(lion_folder, "snarks") if len(r["choices"]) == 1]
    assert len(truncated) == 1 and truncated[0]["target"] == "A"  # kept as upstream has it


def test_lion_record_rejects_unmatched_targets():
    example = {"input": "Pick one\nOptions:\n(A) x\n(B) y", "target": "z, w"}
    with pytest.raises(UserError, match="neither an option letter"):
        task_files.lion_record("ruin_names", example, "file.json:examples[3]")
    with pytest.raises(UserError, match="names no option"):
        task_files.lion_record("snarks", {**example, "target": "(C)"}, "here")
    with pytest.raises(UserError, match="is not one of"):
        task_files.lion_record("navigate", {"input": "Go?", "target": "Maybe"}, "here")


def test_config_errors_a_user_can_fix(tmp_path):
    from stillroom import build

    with pytest.raises(UserError, match="unknown BBH task 'snark'.*did you mean 'snarks'"):
        build("evaluator", "bbh", tasks=["snark"]).selected_tasks()
    with pytest.raises(UserError, match="free-form tasks are not in the lion variant"):
        build("evaluator", "bbh", variant="lion", tasks=["word_sorting"]).selected_tasks()
    with pytest.raises(UserError, match="no such folder"):
        build("evaluator", "bbh", data_dir=str(tmp_path / "nowhere")).source_files()
    with pytest.raises(UserError, match="data root has no bbh folder"):
        build("evaluator", "bbh", context=Context(data_root=tmp_path)).source_files()
    with pytest.raises(UserError, match="zero-shot"):
        build("evaluator", "bbh", variant="lion", num_fewshot=3).prepare()
    with pytest.raises(UserError, match="no BBH file"):
        (tmp_path / "tasks").mkdir()
        task_files.read_upstream(tmp_path, "snarks")
    evaluator = build("evaluator", "bbh", variant="lion", tasks="snarks", limit=5)
    assert evaluator.source_files() == [DATA / "tasks" / "snarks.json"]
    assert len(build("evaluator", "bbh").source_files()) == 27


def test_lion_evaluation_scores_the_first_option_letter(tiny_subject):
    from stillroom import build

    evaluator = build("evaluator", "bbh", variant="lion", tasks=["navigate", "date_understanding"], limit=3,
                      max_gen_toks=4)
    result = evaluator.evaluate(tiny_subject)
    rows = {m.metric: m for m in result.metrics}
    assert set(rows) == {"bbh/acc", "bbh/navigate/acc", "bbh/date_understanding/acc"}
    assert (rows["bbh/acc"].n, rows["bbh/navigate/acc"].n) == (6, 3)
    assert len(result.samples) == 6
    for sample in result.samples:
        letters = "AB" if sample["task"] == "navigate" else None
        if letters is None:
            record = _records(evaluator.prepare(), "date_understanding")[int(sample["doc_id"])]
            letters = option_letters(len(record["choices"]))
        assert sample["prediction"] == (choice_letter(sample["response"], letters) or INVALID)
        assert sample["exact_match"] == float(sample["prediction"] == sample["target"])
    navigate = next(s for s in result.samples if s["task"] == "navigate")
    assert navigate["prompt"].endswith("Options:\n(A) Yes\n(B) No\nA:")


def test_lm_eval_variant_matches_lm_eval_directly(tiny_subject):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from stillroom import build

    evaluator = build("evaluator", "bbh", tasks=["boolean_expressions", "snarks"], limit=3, max_gen_toks=4)
    ours = evaluator.evaluate(tiny_subject)
    folder = evaluator.prepare()
    direct = lm_eval.simple_evaluate(
        model=HFLM(pretrained=tiny_subject.model, tokenizer=tiny_subject.tokenizer, batch_size=8),
        tasks=[folder.group], task_manager=TaskManager(include_path=str(folder.include_dir), include_defaults=False),
        limit=3, gen_kwargs={"max_gen_toks": 4}, bootstrap_iters=0, fewshot_as_multiturn=False,
        apply_chat_template=False)
    rows = {m.metric: m for m in ours.metrics}
    assert rows["bbh/acc"].value == direct["results"][folder.group]["exact_match,flexible-extract"]
    for name, task in folder.tasks.items():
        entry = direct["results"][name]
        assert rows[f"bbh/{task}/acc"].value == entry["exact_match,flexible-extract"]
        assert rows[f"bbh/{task}/exact_match,strict-match"].value == entry["exact_match,strict-match"]
        theirs = {(int(s["doc_id"]), s["filter"]): s["resps"][0][0] for s in direct["samples"][name]}
        mine = {(int(s["doc_id"]), s["filter"]): s["response"] for s in ours.samples if s["task"] == task}
        assert mine == theirs
