"""AGIEval task files for lm-eval: the 8 English multiple-choice tasks as JSONL and task YAMLs in a cache folder.

Two protocols. ``lm_eval``: lm-eval's ``agieval_nous`` tasks unchanged (log-likelihood of each option after
the zero-shot prompt, ``acc`` and ``acc_norm``); each of our YAMLs ``include``s the installed task file (its
``!function utils...`` still resolves next to that file) and, with a local mirror, points it at our JSONL.
``lion``: the same prompts answered by generation, the answer's first option letter compared with the gold.

A local mirror is in the upstream layout (``v1_1/<task>.jsonl``: ``passage``, ``question``, ``options`` as
``"(A)text"``, ``label`` a letter or a one-letter list). It is converted to the fields of the hub copies
lm-eval reads (``hails/agieval-<task>``): ``query`` is AGIEval's own zero-shot prompt (passage, ``Q:``,
question, ``Answer Choices:``, the options, ``A: Among A through <last letter>, the answer is``), ``choices``
the options, ``gold`` a one-element list with the gold option's index.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from stillroom import UserError, read_jsonl
from stillroom.benchmarks.harness.task_folders import read_task_yaml, tasks_dir, variant_folder, variant_name

FORMAT_VERSION = 1
GROUP = "stillroom_agieval"
HUB_PREFIX = "hails/agieval-"  # what lm-eval's agieval tasks load
LETTERS = "ABCDEFG"
SUBFOLDERS = ("v1_1", "v1", ".")  # where the upstream repository's data/ keeps the files



def agieval_dir() -> Path:
    return tasks_dir("agieval") / "agieval"


@functools.lru_cache(maxsize=None)
def all_tasks() -> list[str]:
    """The 8 English multiple-choice tasks (upstream file names, e.g. ``lsat-ar``), in lm-eval's order."""
    group = read_task_yaml(agieval_dir() / "agieval_nous.yaml")
    return [name.removeprefix("agieval_").replace("_", "-") for name in group["task"]]


# ---------------------------------------------------------------------------------------------------------
# Reading and converting the data


def upstream_file(data_dir: Path, task: str) -> Path:
    """``<data_dir>/v1_1/<task>.jsonl`` (or ``v1/``, or directly in ``data_dir``)."""
    for sub in SUBFOLDERS:
        path = data_dir / sub / f"{task}.jsonl"
        if path.is_file():
            return path.resolve() if sub == "." else path
    return data_dir / SUBFOLDERS[0] / f"{task}.jsonl"


def zero_shot_query(passage: str | None, question: str, options: list[str]) -> str:
    """AGIEval's zero-shot prompt for an English multiple-choice question (as in its dataset loader)."""
    count = len(options) if len(options) != 1 else 5
    return ((passage or "") + "Q: " + question + " Answer Choices: " + " ".join(options) + "\n"
            + f"A: Among A through {LETTERS[count - 1]}, the answer is")


def convert_record(record: Any, where: str) -> dict[str, Any]:
    """One upstream record as ``{query, choices, gold: [index]}``."""
    if not isinstance(record, dict):
        raise UserError("not a JSON object", where)
    options, label, question = record.get("options"), record.get("label"), record.get("question")
    if not isinstance(question, str):
        raise UserError("missing 'question'", where)
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise UserError("missing 'options' (a multiple-choice task has a list of option strings)", where)
    if isinstance(label, list):  # the jec-qa layout: a list with one letter
        label = label[0] if len(label) == 1 else None
    if not isinstance(label, str) or len(label.strip()) != 1 or label.strip() not in LETTERS[:len(options)]:
        raise UserError(f"label {record.get('label')!r} is not one of the {len(options)} option letters", where)
    passage = record.get("passage")
    return {"query": zero_shot_query(passage if isinstance(passage, str) else None, question, options),
            "choices": options, "gold": [LETTERS.index(label.strip())]}


def read_upstream(data_dir: Path, task: str) -> list[dict[str, Any]]:
    path = upstream_file(data_dir, task)
    if not path.is_file():
        raise UserError(f"no AGIEval file for task {task!r} (expected the upstream layout v1_1/<task>.jsonl)",
                        str(path))
    return [convert_record(record, f"{path}:{number}")
            for number, record in read_jsonl(path, numbered=True, encoding="utf-8")]


# ---------------------------------------------------------------------------------------------------------
# Writing the folder


def prepare(variant: str, tasks: list[str], data_dir: Path | None):
    """Write (or reuse) the task folder for ``variant`` on ``tasks``, reading ``data_dir`` or the hub."""
    return variant_folder("agieval", GROUP, variant, tasks, data_dir, upstream_file=upstream_file, hub=HUB_PREFIX,
                          version=FORMAT_VERSION,
                          missing="no such AGIEval file (expected the upstream layout v1_1/<task>.jsonl)",
                          fill=lambda out: _write_folder(out, variant, tasks, data_dir))


def _write_folder(out, variant: str, tasks: list[str], data_dir: Path | None) -> dict[str, int]:
    """Write the data and YAMLs through ``out`` (the harness's task writer); returns examples per task."""
    counts: dict[str, int] = {}
    for task in tasks:
        name = variant_name(GROUP, variant, task)
        dataset: dict[str, Any] = {}
        if data_dir is not None:
            records = read_upstream(data_dir, task)
            dataset = out.dataset({"test": out.data(f"{task}.jsonl", records)})
            counts[task] = len(records)
        if variant == "lm_eval":
            config = {"include": str(agieval_dir() / f"{task}.yaml"), "task": name, "task_alias": task, **dataset}
        else:
            config = out.letter_choice_task(
                name, task, dataset or {"dataset_path": HUB_PREFIX + task, "dataset_name": None},
                doc_to_text="{{query}}", doc_to_target="{{'" + LETTERS + "'[gold[0]]}}", version=FORMAT_VERSION)
        out.task(name, config)
    group = variant_name(GROUP, variant)
    out.task(group, out.weighted_group(group, [variant_name(GROUP, variant, t) for t in tasks],
                                       list(headline_keys(variant)), version=FORMAT_VERSION))
    return counts


def headline_keys(variant: str) -> dict[str, str]:
    """lm-eval result keys the group aggregates -> the names they are reported under."""
    if variant == "lm_eval":
        return {"acc,none": "acc", "acc_norm,none": "acc_norm"}
    return {"exact_match,first-letter": "acc"}
