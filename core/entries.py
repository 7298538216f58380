"""Method x seed entries: each trains a fresh student and evaluates it, in this process or in child processes.

An entry's result depends only on its method, options, seed and data: it starts from the base student's
weights, every stage reseeds from the entry's seed (``MethodJob.stage``), and a child process rebuilds every
component from the run folder's copy of the spec. So ``--jobs N`` (entries run concurrently through
``submitit``: its local executor on one machine, Slurm on a cluster) gives the same results as ``--jobs 1``
(entries one after another in this process), and each entry resumes on its own from its finished stages.

This module runs entries and turns their per-seed results into leaderboard items (mean over seeds, interval,
comparison with the reference); it does not write the store.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from stillroom.errors import UserError
from stillroom.plugin_manager import PluginHost, get_host
from stillroom.seeding import derive_seed, seed_everything

LAUNCHERS = ("local", "slurm")


@dataclass
class LaunchOptions:
    """How entries run: ``jobs`` at a time (1: in this process), through ``launcher``."""

    jobs: int = 1
    launcher: str = "local"
    partition: str | None = None
    time_minutes: int = 24 * 60
    threads_per_job: int | None = None
    gpus: int = 0  # local: GPUs to spread entries over (one each); slurm: GPUs per entry's job
    # builds the plugin host in a child process (tests pass their own; default: the installed plugins)
    host_factory: Callable[[], PluginHost] | None = field(default=None, repr=False)

    @property
    def in_process(self) -> bool:
        return self.jobs <= 1 and self.launcher == "local"


def visible_gpus() -> int:
    """GPUs this process may use (0 without CUDA), counted without importing torch when CUDA is hidden."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def threads_per_job() -> int:
    """Threads one entry uses on CPU: ``OMP_NUM_THREADS`` when set, else 1 (many small entries beat one wide
    one on the CPU sizes stillroom's quick specs use)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def default_jobs(gpus: int | None = None) -> int:
    """``--jobs auto``: one entry per visible GPU, else CPU cores / threads per job."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        return gpus
    return max(1, (os.cpu_count() or 1) // threads_per_job())


def parse_jobs(value: str | int | None) -> int:
    """``--jobs``: a positive number or ``auto``."""
    if value is None:
        return 1
    if isinstance(value, int):
        number = value
    elif str(value).strip().lower() == "auto":
        return default_jobs()
    else:
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"expected a number of parallel entries or 'auto', got {value!r}", "--jobs") from None
    if number < 1:
        raise UserError(f"must be at least 1, got {number}", "--jobs")
    return number


def parse_seeds(value: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as a list (None when not given)."""
    if value is None:
        return None
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated integers such as 0,1,2, got {value!r}", "--seeds") from None
    if not seeds:
        raise UserError("give at least one seed, e.g. --seeds 0,1,2", "--seeds")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"each seed once, got {value!r}", "--seeds")
    return seeds


def load_run_spec(path: str | Path, host: PluginHost, seeds: list[int] | None = None) -> BaseModel:
    """A spec file, with ``--seeds`` replacing its own seeds when given (validated like the file itself)."""
    from stillroom.specs import read_spec_file, validate_spec

    data = read_spec_file(path)
    if seeds is not None:
        data = {**data, "seeds": list(seeds)}
    return validate_spec(data, host)


# ---------------------------------------------------------------------------------------------------------
# Running one entry.

def run_entry(host: PluginHost, spec: BaseModel, run_dir, context, teacher, base_student, data, evaluators,
              entry: BaseModel, seed: int, seeded: bool) -> dict[str, Any]:
    """Train ``entry`` at ``seed`` on a fresh student and evaluate it with every evaluator (resumable stages).
    Returns a JSON-able outcome: the entry's summary, info and one result per evaluator."""
    from stillroom.runs import MethodJob, _build, entry_label, entry_stage_prefix, evaluate_subject, _plugin_version

    label = entry_label(entry)
    method = _build(host, "method", entry, context)
    seed_everything(derive_seed(seed, "student"))  # a student that initialises randomly does so from the seed
    job = MethodJob(label, method, teacher, base_student.fresh(), data, spec.budget, seed, run_dir, context,
                    seeded=seeded)
    trained = method.run(job)
    results, versions = {}, {}
    for evaluator_label, evaluator in evaluators:
        seed_everything(derive_seed(seed, "eval", evaluator_label))  # sampled evaluations too
        stage = f"{entry_stage_prefix('eval', label, seed, seeded)}/{evaluator_label}"
        results[evaluator_label] = evaluate_subject(run_dir, label, trained, evaluator_label, evaluator, "method",
                                                    stage=stage)
        versions[evaluator_label] = _plugin_version(host, "evaluator", evaluator.name)
    return {"label": label, "role": "method", "kind": entry.kind, "seed": seed, "summary": job.summary(),
            "info": dict(job.info) or None, "options": entry.model_dump(mode="json"),
            "path": str(getattr(trained, "path", "") or ""), "results": results, "versions": versions}


@dataclass
class EntryTask:
    """One entry at one seed, as a child process receives it (pickled by submitit)."""

    spec_path: str
    seeds: list[int] | None
    folder: str
    label: str
    seed: int
    threads: int | None = None
    host_factory: Callable[[], PluginHost] | None = None
    parent_pid: int | None = None  # local launcher: the `stillroom run` process this entry works for


def _exit_with_parent(pid: int, poll: float = 1.0) -> None:
    """Stop this process soon after ``pid`` is gone: a `stillroom run` killed with kill -9 must not leave
    entries training in its run folder, where a `--resume` would meet them."""
    import threading

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process now has that pid: ours is gone
            return True
        try:  # killed but not yet reaped by its own parent: a zombie
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return False

    def watch():
        while True:
            time.sleep(poll)
            if gone():
                os._exit(1)

    threading.Thread(target=watch, name="stillroom-parent-watch", daemon=True).start()


def run_entry_tasks(tasks: list[EntryTask], claims: str | None = None) -> dict[str, Any]:
    """A child process's work: rebuild the run's components from its folder once, run ``tasks`` (entries of
    one run) one after another, and return ``{"outcomes": {task index: outcome}, "calls": {...}}`` with the calls
    its endpoints made. Running several entries per process pays the start-up (imports, loading the teacher) once
    per process rather than once per entry. With ``claims`` (a folder shared by the lanes of one launch) a task is
    run only by the lane that claims it first, so lanes given the same list share the work as they free up.
    A user error comes back as ``{"user_error": lines}``."""
    first = tasks[0]
    if first.parent_pid:
        _exit_with_parent(first.parent_pid)
    if first.threads:
        os.environ["OMP_NUM_THREADS"] = str(first.threads)
    from stillroom.context import Context
    from stillroom.plugin_manager import use_host
    from stillroom.runs import Run, RunDirectory, _build, entry_label, load_data
    from stillroom.specs import run_seeds, spec_hash

    if first.threads:
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(first.threads)
    host = first.host_factory() if first.host_factory is not None else get_host()
    use_host(host)
    try:
        spec = load_run_spec(first.spec_path, host, first.seeds)
        folder = Path(first.folder)
        context = Context(seed=spec.seed, run_dir=folder)
        endpoints = {name: _build(host, "endpoint", cfg, context) for name, cfg in spec.endpoints.items()}
        context.endpoints.update(endpoints)
        run_dir = RunDirectory(folder, host)
        run_dir.run = Run(folder.name, spec.name, spec, spec_hash(spec), run_dir, Path(first.spec_path))
        data = load_data(run_dir, _build(host, "generator", spec.data, context))
        evaluators = [(entry_label(e), _build(host, "evaluator", e, context)) for e in spec.evaluators]
        teacher = _build(host, "teacher", spec.teacher, context) if spec.teacher is not None else None
        base_student = _build(host, "student", spec.student, context)
        outcomes = {}
        for index, task in enumerate(tasks):
            if claims is not None and not _claim(Path(claims), index):
                continue
            entry = next(e for e in spec.methods if entry_label(e) == task.label)
            outcomes[index] = run_entry(host, spec, run_dir, context, teacher, base_student, data, evaluators, entry,
                                        task.seed, len(run_seeds(spec)) > 1)
    except UserError as exc:
        return {"user_error": list(getattr(exc, "lines", None) or [str(exc)])}
    calls = {name: dict(endpoint.stats) for name, endpoint in endpoints.items()}
    teacher_endpoint = getattr(teacher, "endpoint", None)
    if teacher_endpoint is not None and all(teacher_endpoint is not e for e in endpoints.values()):
        calls["teacher"] = dict(teacher_endpoint.stats)
    return {"outcomes": outcomes, "calls": calls}


def _claim(folder: Path, index: int) -> bool:
    """Take task ``index`` for this process: True for the first process to ask (an exclusive file create)."""
    try:
        os.close(os.open(folder / f"{index}.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def slurm_parameters(options: LaunchOptions) -> dict[str, Any]:
    """What each entry's Slurm job asks for (submitit ``AutoExecutor`` names): its time, CPUs, ``options.gpus``
    GPUs, and the partition."""
    parameters = {"timeout_min": options.time_minutes, "cpus_per_task": options.threads_per_job or 1,
                  "gpus_per_node": options.gpus, "slurm_array_parallelism": options.jobs}
    if options.partition:
        parameters["slurm_partition"] = options.partition
    return parameters


def _executor(options: LaunchOptions, folder: Path):
    import shutil

    import submitit

    if options.launcher == "slurm":
        if shutil.which("srun") is None:
            raise UserError("no Slurm on this machine (srun not found); run from a cluster's login node, or use "
                            "--launcher local", "--launcher")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(**slurm_parameters(options))
        return executor
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=options.time_minutes)
    return executor


def lanes(count: int, options: LaunchOptions) -> list[list[int]]:
    """Task indices grouped into jobs: on one machine without GPUs, ``options.jobs`` lanes that each get every
    task and claim them one at a time as they free up (each lane one process running its entries in turn); with
    GPUs or Slurm, one job per entry."""
    if options.launcher == "local" and not options.gpus:
        return [list(range(count)) for _ in range(max(1, min(options.jobs, count)))]
    return [[index] for index in range(count)]


def run_in_processes(tasks: list[EntryTask], options: LaunchOptions, folder: Path, *, log=None,
                     poll: float = 0.1) -> list[dict[str, Any]]:
    """Run ``tasks`` through submitit, at most ``options.jobs`` jobs at a time locally (one per GPU when GPUs are
    used; see ``lanes``); returns their outcomes in task order, the calls a job made on its last outcome. The
    first failure stops the rest and is raised."""
    folder.mkdir(parents=True, exist_ok=True)
    executor = _executor(options, folder)
    outcomes: list[dict[str, Any] | None] = [None] * len(tasks)
    units = lanes(len(tasks), options)
    shared = any(len(unit) > 1 for unit in units)
    claims = None
    if shared:  # lanes share one task list: a fresh claims folder per launch, so a --resume starts unclaimed
        claims = folder / f"claims-{os.getpid()}-{time.time_ns()}"
        claims.mkdir()
    waiting = list(range(len(units)))
    running: dict[int, tuple[Any, int | None]] = {}  # unit index -> (job, gpu slot)
    free_gpus = list(range(options.gpus)) if options.launcher == "local" and options.gpus else []
    limit = len(units) if options.launcher == "slurm" else options.jobs
    try:
        while waiting or running:
            while waiting and len(running) < limit and (not options.gpus or options.launcher != "local" or free_gpus):
                unit = waiting.pop(0)
                slot = free_gpus.pop(0) if free_gpus else None
                if options.launcher == "local":
                    executor.update_parameters(gpus_per_node=1 if slot is not None else 0,
                                               visible_gpus=(slot,) if slot is not None else ())
                running[unit] = (executor.submit(run_entry_tasks, [tasks[i] for i in units[unit]],
                                                 str(claims) if claims else None), slot)
                if log:
                    for index in units[unit]:
                        log(index, "submitted", running[unit][0].job_id)
            finished = [unit for unit, (job, _) in running.items() if job.done()]
            for unit in finished:
                job, slot = running.pop(unit)
                if slot is not None:
                    free_gpus.append(slot)
                result = _job_result(job, tasks[units[unit][0]])
                done = [units[unit][position] for position in sorted(result["outcomes"])]
                for position, index in zip(sorted(result["outcomes"]), done):
                    outcomes[index] = result["outcomes"][position]
                    if log:
                        log(index, "finished", job.job_id)
                if done:  # the calls this process made ride on its last outcome (a lane that claimed none ran none)
                    outcomes[done[-1]]["calls"] = result["calls"]  # type: ignore[index]
            if not finished:
                time.sleep(poll)
    finally:
        for job, _ in running.values():  # a failure or Ctrl-C: no entry keeps running unattended
            job.cancel(check=False)
    return outcomes  # type: ignore[return-value]


def _job_result(job, task: EntryTask) -> dict[str, Any]:
    from stillroom.specs import SpecError

    where = f"methods[{task.label}] seed {task.seed}"
    try:
        outcome = job.result()
    except Exception as exc:  # submitit's FailedJobError carries the child's traceback
        log = Path(job.paths.stderr)  # every submitit job (local or Slurm) has its log paths
        raise RuntimeError(f"{where} failed in job {job.job_id} (log: {log}):\n{exc}") from None
    if "user_error" in outcome:
        lines = outcome["user_error"]
        raise SpecError(lines) if len(lines) > 1 else UserError(lines[0])
    return outcome


# ---------------------------------------------------------------------------------------------------------
# From per-seed outcomes to leaderboard items.

def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def leaderboard_items(outcomes: list[dict[str, Any]], reference: str, run_name: str, *,
                      resamples: int = 2000) -> list[dict[str, Any]]:
    """One item per model entry and evaluator: metrics averaged over the entry's seeds with their interval
    (``significance.aggregate_seeds``) and, for every entry but ``reference``, the comparison with it (Holm
    across entries, per evaluator and metric). Teacher and base outcomes have ``seed`` None."""
    from stillroom import significance
    from stillroom.runs import BUDGET_COLUMNS

    by_label: dict[str, list[dict[str, Any]]] = {}
    for outcome in outcomes:
        by_label.setdefault(outcome["label"], []).append(outcome)
    items: list[dict[str, Any]] = []
    scores: dict[tuple[str, str], dict[str, Any]] = {}  # (evaluator, metric) -> label -> seed -> item -> score
    higher: dict[tuple[str, str], bool] = {}
    for label, runs in by_label.items():
        first = runs[0]
        seeds = [r["seed"] for r in runs if r["seed"] is not None]
        budget = {c: _mean([(r.get("summary") or {}).get(c) for r in runs]) for c in BUDGET_COLUMNS}
        extra = first.get("info")
        if len(runs) > 1:
            extra = {**(extra or {}), "by_seed": {str(r["seed"]): {"info": r.get("info"), "path": r.get("path")}
                                                  for r in runs}}
        for evaluator_label, result in first["results"].items():
            metrics = []
            for metric in result["metrics"]:
                name = metric["metric"]
                per_seed, seed_samples, per_seed_scores = {}, {}, {}
                for r in runs:
                    key = str(r["seed"]) if r["seed"] is not None else "0"
                    found = next((m for m in r["results"][evaluator_label]["metrics"] if m["metric"] == name), None)
                    if found is None:  # this seed's evaluation did not report the metric
                        per_seed_scores = None
                        continue
                    per_seed[key] = found["value"]
                    seed_samples[key] = r["results"][evaluator_label].get("samples_path")
                    got = significance.sample_scores(seed_samples[key], name, found["value"]) \
                        if seed_samples[key] else None
                    if per_seed_scores is not None:
                        per_seed_scores = {**per_seed_scores, key: got} if got is not None else None
                aggregated = dict(metric)
                if len(runs) > 1:
                    summary = significance.aggregate_seeds(per_seed, per_seed_scores, resamples=resamples)
                    aggregated.update(summary, stderr=None)
                elif metric.get("ci_low") is None and per_seed_scores:
                    aggregated.update(significance.aggregate_seeds(per_seed, per_seed_scores, resamples=resamples))
                aggregated.update(per_seed=per_seed if seeds else None, seed_samples=seed_samples if seeds else None,
                                  seeds=seeds, samples_path=seed_samples[next(iter(seed_samples))])
                metrics.append(aggregated)
                scores.setdefault((evaluator_label, name), {})[label] = per_seed_scores
                higher[(evaluator_label, name)] = metric.get("higher_is_better", True)
            items.append({"subject": label, "role": first["role"], "method": first.get("kind"),
                          "evaluator": evaluator_label, "evaluator_version": first.get("versions", {}).get(evaluator_label),
                          "path": first.get("path") or "", "options": first.get("options"), "extra": extra,
                          "seeds": seeds, **budget, "result": {"metrics": metrics,
                                                               "samples_path": metrics[0]["samples_path"] if metrics else None}})
    reference_model = f"{run_name}/{reference}"
    for (evaluator_label, name), by_entry in scores.items():
        usable = {label: s for label, s in by_entry.items() if s}
        compared = significance.verdicts_against(reference, usable, higher_is_better=higher[(evaluator_label, name)],
                                                 resamples=resamples) if reference in usable else {}
        for item in items:
            if item["evaluator"] != evaluator_label:
                continue
            for metric in item["result"]["metrics"]:
                if metric["metric"] == name:
                    metric["reference"] = reference_model if reference in by_label else None
                    metric.update(compared.get(item["subject"], {}))
    return items
