"""The mmlu evaluator against the local mirror (STILLROOM_DATA): subjects, categories and question counts,
the CSV quirks, and parity with lm-eval called directly (few-shot from the dev split)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from stillroom import UserError
from stillroom.benchmarks.harness import mmlu_tasks as task_files

DATA = Path(os.environ.get("STILLROOM_DATA") or "/nonexistent").resolve() / "mmlu"
pytestmark = [pytest.mark.skipif(not DATA.is_dir(), reason="needs the MMLU mirror (STILLROOM_DATA)"),
              pytest.mark.usefixtures("benchmark_host")]


@pytest.fixture(scope="module")
def folder():
    return task_files.prepare(task_files.subject_categories(), DATA)


def _records(folder, subject, split="test"):
    path = folder.include_dir.parent / "data" / f"{subject}_{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_subjects_categories_and_counts(folder):
    categories = task_files.subject_categories()
    assert len(categories) == 57 and set(categories.values()) == set(task_files.CATEGORIES)
    assert sum(len(_records(folder, s)) for s in categories) == 14042
    assert sum(folder.counts.values()) == 14042 and folder.counts["professional_law"] == 1534
    assert all(len(_records(folder, s, "dev")) == 5 for s in categories)
    groups = {n: t for n, t in folder.tasks.items() if t in task_files.CATEGORIES}
    assert sorted(groups.values()) == sorted(task_files.CATEGORIES)
    group_yaml = (folder.include_dir / "stillroom_mmlu_stem.yaml").read_text()
    assert group_yaml.count("- stillroom_mmlu_") == sum(c == "stem" for c in categories.values())


def test_csv_quirks_survive_conversion(folder):
    # the literal answer text "None" (12 times in the mirror; 10 in test) stays a string, never NaN/null
    nones = [r for s in task_files.subject_categories() for r in _records(folder, s) if "None" in r["choices"]]
    assert len(nones) == 10
    assert {r["subject"] for r in nones} == {"college_computer_science", "college_mathematics", "college_physics",
                                             "electrical_engineering"}
    # trailing spaces inside fields are part of the data
    assert any(c.endswith(" ") for r in _records(folder, "elementary_mathematics") for c in r["choices"])
    # fields with commas, quotes and newlines come through whole, and the answer letter becomes its index
    with (DATA / "test" / "high_school_us_history_test.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    records = _records(folder, "high_school_us_history")
    assert [(r["question"], r["choices"], "ABCD"[r["answer"]]) for r in records] == \
        [(row[0], row[1:5], row[5]) for row in rows]
    yaml_text = (folder.include_dir / "stillroom_mmlu_anatomy.yaml").read_text()
    assert "tag: null" in yaml_text and "dev:" in yaml_text and "dataset_name: null" in yaml_text


def test_bad_rows_name_file_and_line(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "anatomy_test.csv").write_text('"Q1",a,b,c,d,A\n"Q2",a,b,c,d,E\n')
    with pytest.raises(UserError) as error:
        task_files.read_upstream(tmp_path, "anatomy", "test")
    assert "'E' is not one of A/B/C/D" in error.value.message and error.value.location.endswith("anatomy_test.csv:2")


def test_config_errors_a_user_can_fix(tmp_path):
    from stillroom import build

    with pytest.raises(UserError, match="unknown MMLU subject or category 'anatomie'.*did you mean 'anatomy'"):
        build("evaluator", "mmlu", subjects=["anatomie"]).selected_subjects()
    assert len(build("evaluator", "mmlu", subjects="humanities").selected_subjects()) == 13
    with pytest.raises(UserError, match="no such folder"):
        build("evaluator", "mmlu", data_dir=str(tmp_path / "nowhere")).source_files()
    files = build("evaluator", "mmlu", subjects=["anatomy"]).source_files()
    assert files == [DATA / "test" / "anatomy_test.csv", DATA / "dev" / "anatomy_dev.csv"]
    assert build("evaluator", "mmlu").config.num_fewshot == 5


def test_matches_lm_eval_directly_with_few_shot(tiny_subject):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from stillroom import build

    evaluator = build("evaluator", "mmlu", subjects=["anatomy", "world_religions", "marketing"], limit=3,
                      num_fewshot=2)
    ours = evaluator.evaluate(tiny_subject)
    folder = evaluator.prepare()
    direct = lm_eval.simple_evaluate(
        model=HFLM(pretrained=tiny_subject.model, tokenizer=tiny_subject.tokenizer, batch_size=8),
        tasks=[folder.group], task_manager=TaskManager(include_path=str(folder.include_dir), include_defaults=False),
        limit=3, num_fewshot=2, bootstrap_iters=0, fewshot_as_multiturn=False, apply_chat_template=False)
    rows = {m.metric: m for m in ours.metrics}
    # lm-eval files anatomy under stem (the original categories.py under "other")
    assert set(rows) == {"mmlu/acc", "mmlu/stem/acc", "mmlu/other/acc", "mmlu/humanities/acc", "mmlu/anatomy/acc",
                         "mmlu/world_religions/acc", "mmlu/marketing/acc"}
    assert rows["mmlu/acc"].value == direct["results"][folder.group]["acc,none"] and rows["mmlu/acc"].n == 9
    assert rows["mmlu/other/acc"].n == 3
    for name, label in folder.tasks.items():
        assert rows[f"mmlu/{label}/acc"].value == direct["results"][name]["acc,none"]
    assert ours.details["n_shot"] == direct["n-shot"] and set(direct["n-shot"].values()) == {2}
    # the few-shot examples are the subject's dev questions, in file order
    prompt_doc = direct["samples"]["stillroom_mmlu_anatomy"][0]["arguments"][0][0]
    dev = _records(evaluator.prepare(), "anatomy", "dev")
    assert dev[0]["question"].strip() in prompt_doc and dev[1]["question"].strip() in prompt_doc
