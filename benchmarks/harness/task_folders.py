"""Task folders that benchmark packages generate for the ``lm_eval`` evaluator, and their results renamed.

A task benchmark of this package (bbh, agieval, mmlu) turns its data into JSONL files and task YAMLs in a
cache folder, runs them with the ``lm_eval`` evaluator and reports lm-eval's rows under its own names
(``benchmark.TaskBenchmark``). What it needs for writing and renaming is here.

A folder is ``<cache>/benchmarks/<benchmark>/<prefix><digest>`` with ``tasks/`` (the include path),
``data/`` and ``counts.json``; the digest covers everything that shapes its contents (the benchmark's key,
the lm-eval version and task folder, the source files' sizes and times), so a finished folder is reused as is.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from stillroom import EvalResult, MetricValue, UserError, paths
from stillroom.benchmarks.harness.answer_letters import FILTER_NAME

# Greedy short answers that stop at the next question: the Lion paper's multiple-choice protocol.
LETTER_CHOICE_GENERATION = {"until": ["</s>", "Q:", "<|im_end|>"], "do_sample": False, "temperature": 0.0,
                            "max_gen_toks": 32}


class _FunctionTagLoader(yaml.SafeLoader):
    """Reads lm-eval YAMLs without importing the ``!function`` helpers they name."""


_FunctionTagLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def tasks_dir(location: str = "lm_eval") -> Path:
    """lm-eval's bundled task folder, found without importing lm-eval (slow)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("lm-eval is not installed (pip install lm-eval)", location)
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def read_task_yaml(path: Path) -> dict[str, Any]:
    """An lm-eval task or group YAML (``!function`` tags read as their dotted names)."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_FunctionTagLoader)


def write_task_yaml(path: Path, content: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")


class TaskWriter:
    """Fills a task folder's scratch copy; the paths it hands out for the YAMLs name the finished folder."""

    def __init__(self, scratch: Path, final: Path):
        self.scratch = scratch
        self.final = final

    def data(self, filename: str, records: list[dict[str, Any]]) -> str:
        """Write ``records`` as ``data/<filename>`` (JSON lines); the path the finished folder will have."""
        with (self.scratch / "data" / filename).open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        return str(self.final / "data" / filename)

    def task(self, name: str, config: dict[str, Any]) -> None:
        """Write the task or group YAML ``tasks/<name>.yaml``."""
        write_task_yaml(self.scratch / "tasks" / f"{name}.yaml", config)

    @staticmethod
    def dataset(data_files: dict[str, str]) -> dict[str, Any]:
        """Task options that load the splits from JSON lines files (split -> path from ``data``)."""
        return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": data_files}}

    @staticmethod
    def letter_choice_task(name: str, alias: str, dataset: dict[str, Any], *, doc_to_text: str,
                           doc_to_target: str, version: int, description: str | None = None) -> dict[str, Any]:
        """A zero-shot generative task scored by the option letter the answer chooses against the gold letter
        (``exact_match`` under the filter ``first-letter``)."""
        head = {"task": name, "task_alias": alias, **dataset, "test_split": "test", "output_type": "generate_until"}
        if description is not None:
            head["description"] = description
        return {
            **head,
            "doc_to_text": doc_to_text,
            "doc_to_target": doc_to_target,
            "num_fewshot": 0,
            "generation_kwargs": dict(LETTER_CHOICE_GENERATION),
            "filter_list": [{"name": "first-letter",
                             "filter": [{"function": FILTER_NAME}, {"function": "take_first"}]}],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": version},
        }

    @staticmethod
    def weighted_group(name: str, tasks: list[str], keys: list[str], *, version: int,
                       aggregate: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A group whose metrics (result keys ``metric,filter``) are means over its tasks weighted by size,
        unless ``aggregate`` gives the group's own aggregation list."""
        default = [{"metric": metric, "aggregation": "mean", "weight_by_size": True, "filter_list": filter_name}
                   for metric, _, filter_name in (key.partition(",") for key in keys)]
        return {"group": name, "task": tasks, "aggregate_metric_list": aggregate or default,
                "metadata": {"version": version}}


@dataclass
class TaskFolder:
    """A folder of generated task YAMLs (the include path) and the names to ask lm-eval for."""

    include_dir: Path
    group: str
    tasks: dict[str, str]  # our lm-eval task (or subgroup) name -> the benchmark's name for it
    counts: dict[str, int] = field(default_factory=dict)  # examples per task (local data only)

    def report(self, result: EvalResult, benchmark: str, *, metric: dict[str, str] | Callable[[str], str],
               details: dict[str, Any]) -> EvalResult:
        """``result`` under the benchmark's names: the group becomes ``<benchmark>``, each task
        ``<benchmark>/<name>``, each result key ``metric(key)`` (or ``metric.get(key, key)``); rows of
        anything else are dropped and ``details`` (with ``benchmark``) added."""
        rename = metric if callable(metric) else (lambda key: metric.get(key, key))
        metrics = []
        for row in result.metrics:
            name, _, key = row.metric.partition("/")
            if name == self.group:
                prefix = benchmark
            elif name in self.tasks:
                prefix = f"{benchmark}/{self.tasks[name]}"
            else:
                continue
            metrics.append(MetricValue(**{**row.model_dump(), "metric": f"{prefix}/{rename(key)}"}))
        samples = [{**s, "task": self.tasks.get(s.get("task"), s.get("task"))} for s in result.samples]
        return EvalResult(metrics=metrics, samples=samples,
                          details={**result.details, "benchmark": benchmark, **details})


def task_folder(benchmark: str, key: dict[str, Any], *, files: list[Path], missing: str, group: str,
                tasks: dict[str, str], fill: Callable[[TaskWriter], dict[str, int]], prefix: str = "") -> TaskFolder:
    """Write (or reuse) a task folder of ``benchmark``: ``fill`` writes the data and YAMLs and returns the
    examples per task. ``key`` is what shapes the contents besides lm-eval and the source ``files`` (each
    must exist: ``missing`` is the message when one does not)."""
    import lm_eval

    for path in files:
        if not path.is_file():
            raise UserError(missing, str(path))
    key = {**key, "lm_eval": lm_eval.__version__, "lm_eval_dir": str(tasks_dir(benchmark)),
           "files": [paths.file_fingerprint(p) for p in files]}
    folder = paths.cache_dir() / "benchmarks" / benchmark / f"{prefix}{paths.content_digest(key)}"

    def write(scratch: Path) -> dict[str, int]:
        (scratch / "data").mkdir()
        (scratch / "tasks").mkdir()
        return fill(TaskWriter(scratch, folder))

    counts = paths.fill_once(folder, write, marker="counts.json")
    return TaskFolder(folder / "tasks", group, tasks, counts)


def variant_name(group: str, variant: str, task: str | None = None) -> str:
    """Our lm-eval name for the group (``task`` None) or a task of a benchmark with protocol variants: lm-eval's
    own protocol keeps ``<group>_<task>``, the lion protocol is ``<group>_lion_<task>`` (dashes become ``_``)."""
    name = group if variant == "lm_eval" else f"{group}_lion"
    return name if task is None else f"{name}_{task.replace('-', '_')}"


def variant_folder(benchmark: str, group: str, variant: str, tasks: list[str], data_dir: Path | None, *,
                   upstream_file: Callable[[Path, str], Path], hub: str, version: int, missing: str,
                   fill: Callable[[TaskWriter], dict[str, int]]) -> TaskFolder:
    """Write (or reuse) the task folder of a benchmark with protocol variants (bbh, agieval) for ``variant`` on
    ``tasks``, from the local mirror ``data_dir`` (``upstream_file(data_dir, task)``) or else the ``hub`` copy."""
    files = [upstream_file(data_dir, t) for t in tasks] if data_dir is not None else []
    key = {"format": version, "variant": variant, "tasks": tasks, "source": "local" if data_dir is not None else hub}
    return task_folder(benchmark, key, files=files, missing=missing, group=variant_name(group, variant),
                       tasks={variant_name(group, variant, t): t for t in tasks}, prefix=f"{variant}-", fill=fill)
