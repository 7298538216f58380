"""MMLU task files for lm-eval: subjects as JSONL and task YAMLs (subjects, categories, overall) in a cache folder.

Each of our subject YAMLs ``include``s lm-eval's installed ``mmlu_<subject>.yaml`` (its prompt, choices and
``acc`` metric) with ``tag: null`` so our tasks join only our groups, and, with a local mirror, points it at
our JSONL (a ``test`` file, and a ``dev`` file for the few-shot examples). The categories (stem, humanities,
social_sciences, other) are lm-eval's, read from the tags of its subject files; groups aggregate accuracy
weighted by the number of questions, as lm-eval's ``mmlu`` does.

A local mirror is in the original ``data.tar`` layout: ``test/<subject>_test.csv`` and
``dev/<subject>_dev.csv``, no header, columns ``question, A, B, C, D, answer``. It is read with the ``csv``
module and nothing else: the literal answer text ``None`` (12 times) stays the string "None" (pandas would
make it NaN), and trailing spaces inside fields are kept, as in the official data.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

from stillroom import UserError
from stillroom.benchmarks.harness.task_folders import read_task_yaml, task_folder, tasks_dir

FORMAT_VERSION = 1
GROUP = "stillroom_mmlu"
CATEGORIES = ("stem", "humanities", "social_sciences", "other")
SPLITS = ("test", "dev")  # dev holds the five few-shot examples of each subject



def mmlu_dir() -> Path:
    return tasks_dir("mmlu") / "mmlu" / "default"


@functools.lru_cache(maxsize=None)
def subject_categories() -> dict[str, str]:
    """Every MMLU subject -> its category, as lm-eval files them (sorted by subject)."""
    found = {}
    for path in sorted(mmlu_dir().glob("mmlu_*.yaml")):
        config = read_task_yaml(path) or {}
        tag, subject = config.get("tag"), config.get("dataset_name")
        if isinstance(tag, str) and subject:
            category = tag.removeprefix("mmlu_").removesuffix("_tasks")
            if category in CATEGORIES:
                found[subject] = category
    return found


# ---------------------------------------------------------------------------------------------------------
# Reading the data


def upstream_file(data_dir: Path, subject: str, split: str) -> Path:
    return data_dir / split / f"{subject}_{split}.csv"


def read_upstream(data_dir: Path, subject: str, split: str) -> list[dict[str, Any]]:
    """One subject's split as lm-eval's fields: ``{question, subject, choices: [4], answer: 0-3}``."""
    path = upstream_file(data_dir, subject, split)
    if not path.is_file():
        raise UserError(f"no MMLU {split} file for {subject!r} (expected the data.tar layout "
                        f"{split}/<subject>_{split}.csv)", str(path))
    records = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if len(row) != 6:
                raise UserError(f"expected 6 columns (question, A, B, C, D, answer), got {len(row)}", where)
            answer = row[5].strip()
            if answer not in ("A", "B", "C", "D"):
                raise UserError(f"answer {row[5]!r} is not one of A/B/C/D", where)
            records.append({"question": row[0], "subject": subject, "choices": row[1:5],
                            "answer": "ABCD".index(answer)})
    return records


# ---------------------------------------------------------------------------------------------------------
# Writing the folder


def task_name(subject: str) -> str:
    return f"{GROUP}_{subject}"


def category_group(category: str) -> str:
    return f"{GROUP}_{category}"


def prepare(subjects: dict[str, str], data_dir: Path | None):
    """Write (or reuse) the task folder for ``subjects`` (subject -> category), reading ``data_dir`` or the hub."""
    files = [upstream_file(data_dir, s, split) for s in subjects for split in SPLITS] if data_dir else []
    names = {task_name(s): s for s in subjects}
    names.update({category_group(c): c for c in CATEGORIES if c in subjects.values()})
    return task_folder(
        "mmlu", {"format": FORMAT_VERSION, "subjects": subjects, "source": "local" if data_dir is not None else "hub"},
        files=files, missing="no such MMLU file (expected the data.tar layout test/<subject>_test.csv and "
                             "dev/<subject>_dev.csv)",
        group=GROUP, tasks=names, fill=lambda out: _write_folder(out, subjects, data_dir))


def _write_folder(out, subjects: dict[str, str], data_dir: Path | None) -> dict[str, int]:
    """Write the data and YAMLs through ``out`` (the harness's task writer); returns test questions per subject."""
    counts: dict[str, int] = {}
    for subject in subjects:
        config: dict[str, Any] = {"include": str(mmlu_dir() / f"mmlu_{subject}.yaml"), "task": task_name(subject),
                                  "task_alias": subject, "tag": None}
        if data_dir is not None:
            data_files = {}
            for split in SPLITS:
                records = read_upstream(data_dir, subject, split)
                data_files[split] = out.data(f"{subject}_{split}.jsonl", records)
                if split == "test":
                    counts[subject] = len(records)
            config.update(out.dataset(data_files))
        out.task(task_name(subject), config)
    used = [c for c in CATEGORIES if c in subjects.values()]
    for category in used:
        out.task(category_group(category), {
            "group": category_group(category), "group_alias": category,
            "task": [task_name(s) for s, c in subjects.items() if c == category],
            "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
            "metadata": {"version": FORMAT_VERSION}})
    out.task(GROUP, {
        "group": GROUP, "task": [category_group(c) for c in used],
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": FORMAT_VERSION}})
    return counts
