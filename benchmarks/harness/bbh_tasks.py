"""BBH task files for lm-eval: the data as JSONL and the task YAMLs, written to a cache folder.

Two protocols. ``lm_eval``: lm-eval's ``bbh_zeroshot`` tasks unchanged (``Q: ...\\nA:``, exact match with its
strict-match and flexible-extract filters); each of our YAMLs ``include``s the installed task file and, with
a local mirror, points it at our JSONL. ``lion``: the 23 tasks that can be multiple choice (the four
free-form tasks dropped), zero-shot without chain of thought, the options lettered (the six two-way tasks
get ``(A)``/``(B)`` options), and the answer's first option letter compared with the gold letter.

Upstream quirks (see the mirror's SOURCE.md): three targets are answer text instead of a letter because the
right option was split on its commas into several options (``Monsters, Inc`` -> ``(A) Monsters`` ``(B) Inc``);
for the lion protocol the split options are joined back and the options relettered, so the example keeps
its gold letter. The ``lm_eval`` protocol keeps the data exactly as lm-eval's hub copy has it.

The folder is written by the harness's task-folder helper (``task_folders.variant_folder``): its
name is a digest of everything that shapes its contents, so a changed mirror or lm-eval version gets fresh
files, and a finished folder is reused as is.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from stillroom import UserError
from stillroom.benchmarks.harness.task_folders import read_task_yaml, tasks_dir, variant_folder, variant_name

FORMAT_VERSION = 1
GROUP = "stillroom_bbh"
FREE_FORM = ("dyck_languages", "multistep_arithmetic_two", "object_counting", "word_sorting")
# The two answers of each yes/no-style task, in the order they become options (A) and (B).
BINARY_OPTIONS = {
    "boolean_expressions": ("True", "False"),
    "causal_judgement": ("Yes", "No"),
    "formal_fallacies": ("valid", "invalid"),
    "navigate": ("Yes", "No"),
    "sports_understanding": ("yes", "no"),
    "web_of_lies": ("Yes", "No"),
}
HUB_DATASET = "SaylorTwift/bbh"  # what lm-eval's bbh tasks load

_OPTION_LINE = re.compile(r"^\(([A-Z])\) ?(.*)$")
_GOLD_LETTER = re.compile(r"^\(([A-Z])\)$")
_DASH_OPTIONS = re.compile(r"\nOptions:\n(?:- [^\n]*(?:\n|$))+$")



def zeroshot_dir() -> Path:
    return tasks_dir("bbh") / "bbh" / "zeroshot"


@functools.lru_cache(maxsize=None)
def all_tasks() -> list[str]:
    """The 27 BBH task names, in lm-eval's order."""
    group = read_task_yaml(zeroshot_dir() / "_bbh_zeroshot.yaml")
    return [name.removeprefix("bbh_zeroshot_") for name in group["task"]]


def tasks_for(variant: str) -> list[str]:
    return [t for t in all_tasks() if variant == "lm_eval" or t not in FREE_FORM]


# ---------------------------------------------------------------------------------------------------------
# Reading the data


def upstream_file(data_dir: Path, task: str) -> Path:
    return data_dir / "tasks" / f"{task}.json"


def read_upstream(data_dir: Path, task: str) -> list[dict[str, str]]:
    """The examples of one task from the upstream layout (``tasks/<task>.json``)."""
    path = upstream_file(data_dir, task)
    if not path.is_file():
        raise UserError(f"no BBH file for task {task!r} (expected the upstream layout tasks/<task>.json)", str(path))
    try:
        examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"not a BBH task file ({type(exc).__name__}: {exc})", str(path)) from None
    for index, example in enumerate(examples):
        if not isinstance(example, dict) or not isinstance(example.get("input"), str) or \
                not isinstance(example.get("target"), str):
            raise UserError(f"example {index} lacks string 'input'/'target'", f"{path}:examples[{index}]")
    return [{"input": e["input"], "target": e["target"]} for e in examples]


def read_hub(task: str) -> list[dict[str, str]]:
    """The examples of one task from the hub copy lm-eval uses (same fields as upstream)."""
    import datasets

    try:
        rows = datasets.load_dataset(HUB_DATASET, task, split="test")
    except Exception as exc:  # offline, or the hub copy moved
        raise UserError(f"cannot load {HUB_DATASET}/{task} from the hub ({type(exc).__name__}: {exc}); point "
                        f"data_dir or STILLROOM_DATA at a local BBH mirror", "bbh") from None
    return [{"input": r["input"], "target": r["target"]} for r in rows]


# ---------------------------------------------------------------------------------------------------------
# The lion protocol: every example as lettered multiple choice


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def _split_options(text: str) -> tuple[str, list[str]] | None:
    head, sep, block = text.rpartition("\nOptions:\n")
    if not sep:
        return None
    options = []
    for line in block.split("\n"):
        match = _OPTION_LINE.match(line)
        if match is None or match.group(1) != _letter(len(options)):
            return None
        options.append(match.group(2))
    return head, options


def _render(question: str, options: list[str]) -> str:
    return question + "\nOptions:\n" + "\n".join(f"({_letter(i)}) {o}" for i, o in enumerate(options))


def _join_split_option(options: list[str], target: str) -> tuple[list[str], int] | None:
    """Repair an option that upstream split on its commas: the run of options whose texts, joined with
    ', ', equal the target text becomes one option again."""
    for start in range(len(options)):
        for end in range(start + 2, len(options) + 1):
            if ", ".join(options[start:end]) == target:
                return options[:start] + [target] + options[end:], start
    return None


def lion_record(task: str, example: dict[str, str], where: str) -> dict[str, Any]:
    """One example as ``{input, target: letter, choices}`` for the lion protocol."""
    text, target = example["input"], example["target"]
    if task in BINARY_OPTIONS:
        options = list(BINARY_OPTIONS[task])
        if target not in options:
            raise UserError(f"target {target!r} is not one of {options}", where)
        question = _DASH_OPTIONS.sub("", text)
        return {"input": _render(question, options), "target": _letter(options.index(target)),
                "choices": options, "repaired": False}
    parsed = _split_options(text)
    if parsed is None:
        raise UserError("no lettered '(A) ...' options after an 'Options:' line", where)
    question, options = parsed
    gold = _GOLD_LETTER.match(target)
    if gold is not None:
        if ord(gold.group(1)) - ord("A") >= len(options):
            raise UserError(f"target {target} names no option ({len(options)} options)", where)
        return {"input": text, "target": gold.group(1), "choices": options, "repaired": False}
    repaired = _join_split_option(options, target)
    if repaired is None:
        raise UserError(f"target {target!r} is neither an option letter nor the text of a run of options", where)
    options, index = repaired
    return {"input": _render(question, options), "target": _letter(index), "choices": options,
            "repaired": True}


# ---------------------------------------------------------------------------------------------------------
# Writing the folder


def prepare(variant: str, tasks: list[str], data_dir: Path | None):
    """Write (or reuse) the task folder for ``variant`` on ``tasks``, reading ``data_dir`` or the hub."""
    return variant_folder("bbh", GROUP, variant, tasks, data_dir, upstream_file=upstream_file, hub=HUB_DATASET,
                          version=FORMAT_VERSION,
                          missing="no such BBH task file (expected the upstream layout tasks/<task>.json)",
                          fill=lambda out: _write_folder(out, variant, tasks, data_dir))


def _write_folder(out, variant: str, tasks: list[str], data_dir: Path | None) -> dict[str, int]:
    """Write the data and YAMLs through ``out`` (the harness's task writer); returns examples per task."""
    counts: dict[str, int] = {}
    source = zeroshot_dir()
    for task in tasks:
        name = variant_name(GROUP, variant, task)
        if variant == "lm_eval":
            config: dict[str, Any] = {"include": str(source / f"{task}.yaml"), "task": name, "task_alias": task}
            if data_dir is not None:
                examples = read_upstream(data_dir, task)
                config.update(out.dataset({"test": out.data(f"{task}.jsonl", examples)}))
                counts[task] = len(examples)
        else:
            examples = read_upstream(data_dir, task) if data_dir is not None else read_hub(task)
            where = str(upstream_file(data_dir, task)) if data_dir is not None else f"{HUB_DATASET}/{task}"
            records = [lion_record(task, e, f"{where}:examples[{i}]") for i, e in enumerate(examples)]
            dataset = out.dataset({"test": out.data(f"{task}.jsonl", records)})
            counts[task] = len(records)
            description = read_task_yaml(source / f"{task}.yaml").get("description", "")
            config = out.letter_choice_task(name, task, dataset, doc_to_text="Q: {{input}}\nA:",
                                            doc_to_target="{{target}}", description=description,
                                            version=FORMAT_VERSION)
        out.task(name, config)
    upstream = read_task_yaml(source / "_bbh_zeroshot.yaml")
    group = variant_name(GROUP, variant)
    out.task(group, out.weighted_group(
        group, [variant_name(GROUP, variant, t) for t in tasks], [headline_key(variant)], version=FORMAT_VERSION,
        aggregate=upstream.get("aggregate_metric_list") if variant == "lm_eval" else None))
    return counts


def headline_key(variant: str) -> str:
    """The lm-eval result key the group aggregates, reported as ``bbh/acc``."""
    return "exact_match,flexible-extract" if variant == "lm_eval" else "exact_match,first-letter"
