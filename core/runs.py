"""The pipeline of ``stillroom run SPEC``: from a validated spec to the leaderboard rows of one run.

``execute`` opens the run folder (``core/rundir.py``), builds the spec's components, builds the data as the
first stage, runs every method entry at every seed (``run_entry``: a fresh student in a ``MethodJob`` of
``core/training.py``, then every evaluator), evaluates the teacher and the base student, and records the results
(``core/results.py``).

An entry's result depends only on its method, options, seed and data: it starts from the base student's
weights, every stage reseeds from the entry's seed (``MethodJob.stage``), and a child process rebuilds every
component from the run folder's copy of the spec. So ``--jobs N`` (entries run concurrently through
``submitit``: its local executor on one machine, Slurm on a cluster) gives the same results as ``--jobs 1``
(entries one after another in this process), and each entry resumes on its own from its finished stages.

This module orders the steps and places the entries; the rooms it calls own the files, the job and its
budget, and the result records. It writes no store row itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from stillroom import rundir
from stillroom.plugin_manager import PluginHost, get_host, use_host
from stillroom.results import Evaluation, Lineage, SubjectResults, evaluate_subject, over_seeds
from stillroom.roles import Component, Context, UserError
from stillroom.rundir import FINISHED, RunDirectory, process_rank, read_jsonl, write_json_atomic, write_jsonl_atomic
from stillroom.specs import (SpecBase, SpecError, read_spec_file, reference_label, run_seeds, spec_hash,
                             validate_spec)
from stillroom.training import (MethodJob, accounted_endpoints, derive_seed, endpoint_usage, entry_stage_prefix,
                                seed_everything)


@dataclass
class Run:
    """A run being executed: what observer hooks receive."""

    id: str
    name: str
    spec: SpecBase
    spec_hash: str
    dir: RunDirectory
    spec_path: Path

    def spec_json(self) -> dict[str, Any]:
        """The resolved spec as the store keeps it."""
        return self.spec.model_dump(mode="json")

    def model_name(self, subject: str) -> str:
        """A model's name on the leaderboard: ``<run name>/<subject>``."""
        return f"{self.name}/{subject}"


# ---------------------------------------------------------------------------------------------------------
# How entries run (``--jobs``, ``--launcher``, ``--seeds``).

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


def load_run_spec(path: str | Path, host: PluginHost, seeds: list[int] | None = None) -> SpecBase:
    """A spec file, with ``--seeds`` replacing its own seeds when given (validated like the file itself)."""
    data = read_spec_file(path)
    if seeds is not None:
        data = {**data, "seeds": list(seeds)}
    return validate_spec(data, host)


# ---------------------------------------------------------------------------------------------------------
# The run, step by step.

def _build(host: PluginHost, role: str, config: BaseModel, context: Context) -> Component:
    cls = host.component(role, config.kind)  # type: ignore[attr-defined]
    # only what the spec set: a default such as `Field(None)` on a `str` field must not be validated again
    options = config.model_dump(exclude={"kind"}, exclude_unset=True)
    return cls(cls.Config.model_validate(options), context)


def entry_label(entry: BaseModel) -> str:
    """A method or evaluator entry's name on the leaderboard: its ``label``, else its kind."""
    return getattr(entry, "label", None) or entry.kind  # type: ignore[attr-defined]


def execute(spec_path: str | Path, *, resume: bool = False, host: PluginHost | None = None,
            console=None, output_dir: str | Path | None = None, seeds: list[int] | None = None,
            launch=None) -> Run:
    """Validate, run every method entry (at every seed) as stages, evaluate every model, write the leaderboard
    store. ``output_dir`` replaces the spec's own (for a packaged spec whose folder is not the user's);
    ``seeds`` replaces the spec's seeds (``--seeds``); ``launch`` (``LaunchOptions``) runs entries in
    parallel processes (``--jobs``, ``--launcher``)."""
    from stillroom.leaderboard import report_page
    from stillroom.results import ResultsStore, record_run

    host = host or get_host()
    # absolute(), not resolve(): a symlinked spec (examples/quickstart.toml) keeps its runs next to the link
    spec_path = Path(spec_path).absolute()
    spec = load_run_spec(spec_path, host, seeds)
    launch = launch or LaunchOptions()
    digest = spec_hash(spec)
    output_dir = Path(output_dir).resolve() if output_dir is not None else (spec_path.parent / spec.output_dir).resolve()
    folder = rundir.find_resumable(output_dir, spec.name, digest) if resume else None
    if resume and folder is None and console:
        console.print(f"[yellow]no unfinished run of {spec.name} with this spec; starting a new one[/]")
    run_id = folder.name if folder else rundir.new_run_id(digest)
    folder = folder or output_dir / spec.name / run_id
    rundir.check_before_run(spec, output_dir)  # cache, store, output and data folders: before any work
    context = Context(seed=spec.seed, run_dir=folder)

    if spec.teacher is None:  # before anything is loaded: a spec that cannot run fails in a second
        for entry in spec.methods:
            if host.component("method", entry.kind).uses_teacher:
                raise UserError(f"method {entry.kind!r} needs a teacher; add a [teacher] table",
                                f"methods[{entry_label(entry)}]")

    endpoints = {name: _build(host, "endpoint", cfg, context) for name, cfg in spec.endpoints.items()}
    context.endpoints.update(endpoints)
    data_gen = _build(host, "generator", spec.data, context)
    evaluators = [(entry_label(e), _build(host, "evaluator", e, context)) for e in spec.evaluators]

    # the folder only now: a spec whose components fail to build leaves none behind
    created = not folder.exists()
    run_dir = RunDirectory(folder, host)
    run = Run(run_id, spec.name, spec, digest, run_dir, spec_path)
    run_dir.run = run
    if process_rank() == 0:
        rundir.hold_lock(folder)  # a second `run --resume` of this run fails here, naming the holder

    if not (folder / "manifest.json").exists() and process_rank() == 0:
        files = [Path(f) for c in [data_gen, *(e for _, e in evaluators)] for f in c.source_files()]
        rundir.write_manifest(folder, run_id, spec, digest, spec_path, host, files)
    run_dir.event("run_started" if not resume else "run_resumed", run_id=run_id)
    host.pm.hook.stillroom_run_started(run=run)

    # the data first: a missing or malformed data file is reported before any model is loaded (or trained)
    calls_before_data = endpoint_usage(list(endpoints.values()))["calls"]
    try:
        data = load_data(run_dir, data_gen)
    except UserError:
        rundir.release_lock(folder)
        rundir.discard_unstarted(folder, created, rebuildable=("data",))
        raise
    # a data stage that called no endpoint only read files: rebuilding it costs seconds, so it alone does not keep
    # the folder of a run that fails its checks (a student or teacher that cannot load, a method that refuses its
    # teacher) before any method stage begins; a data stage that generated does keep it
    rebuildable = ("data",) if endpoint_usage(list(endpoints.values()))["calls"] == calls_before_data else ()
    teacher = None
    try:
        try:
            teacher = _build(host, "teacher", spec.teacher, context) if spec.teacher is not None else None
            base_student = _build(host, "student", spec.student, context)
            outcomes = _train_and_evaluate(host, spec, run, context, endpoints, teacher, base_student, data,
                                           evaluators, launch, folder / ("spec" + spec_path.suffix), seeds)
            evaluations, lineages = _leaderboard_records(host, spec, run_dir, teacher, outcomes)
        finally:
            if process_rank() == 0:
                _record_calls(run_dir, endpoints, teacher)
    except UserError:
        if process_rank() == 0:
            rundir.release_lock(folder)
            rundir.discard_unstarted(folder, created, rebuildable=rebuildable)
        raise
    if process_rank() != 0:
        return run
    rows = record_run(ResultsStore.default(), run, evaluations, lineages)
    page = report_page(host, rows, title=f"{spec.name} {run_id}")
    if page is not None:
        (folder / "report.html").write_bytes(page)
    host.pm.hook.stillroom_run_finished(run=run, results=rows)
    (folder / FINISHED).touch()
    run_dir.event("run_finished", rows=len(rows))
    rundir.release_lock(folder)
    return run


def _train_and_evaluate(host: PluginHost, spec: SpecBase, run: Run, context: Context, endpoints, teacher,
                        base_student, data, evaluators, launch, spec_copy: Path,
                        seeds_override) -> list[SubjectResults]:
    """Train and evaluate every method entry at every seed (in this process, or ``launch.jobs`` at a time in
    child processes), then evaluate the teacher and the base student once; returns one outcome per model and
    seed."""
    run_dir = run.dir
    outcomes: list[SubjectResults] = []
    seeds = run_seeds(spec)
    seeded = len(seeds) > 1
    pairs = [(entry, seed) for entry in spec.methods for seed in seeds]
    if launch.in_process:
        for entry, seed in pairs:
            outcomes.append(run_entry(host, spec, run_dir, context, teacher, base_student, data, evaluators, entry,
                                      seed, seeded))
    else:
        parent = os.getpid() if launch.launcher == "local" else None
        tasks = [EntryTask(str(spec_copy), seeds_override, str(run_dir.root), entry_label(entry), seed,
                           launch.threads_per_job, launch.host_factory, parent) for entry, seed in pairs]

        def log(index, what, job_id):
            run_dir.event(f"entry_{what}", entry=tasks[index].label, seed=tasks[index].seed, job=job_id)

        found, calls = run_in_processes(tasks, launch, run_dir.root / "jobs", log=log)
        outcomes.extend(found)
        for made in calls:
            _add_calls(endpoints, teacher, made)
    anchors = [("teacher", teacher)] if teacher is not None and spec.evaluate.teacher else []
    anchors += [("base", base_student)] if spec.evaluate.base else []
    evaluated = []
    for name, component in anchors:
        evaluations = tuple(evaluate_subject(run_dir, name, component, label, evaluator, name,
                                             version=plugin_version(host, "evaluator", evaluator.name))
                            for label, evaluator in evaluators)
        lineage = Lineage(name, seeds=(), path=str(component.path or ""))
        evaluated.append(SubjectResults(name, lineage, evaluations))
    return evaluated + outcomes  # teacher and base first on the leaderboard


def _leaderboard_records(host: PluginHost, spec: SpecBase, run_dir: RunDirectory, teacher,
                         outcomes: list[SubjectResults]) -> tuple[list[Evaluation], dict[str, Lineage]]:
    """The run's outcomes averaged over seeds and compared with the reference entry (``results.over_seeds``),
    each model's lineage completed with what the whole run shares: the teacher's identity, the data, and (for
    method entries) the spec's budget among the options."""
    evaluations, lineages = over_seeds(outcomes, reference_label(spec, host), spec.name)
    teacher_endpoint = teacher.endpoint if teacher is not None else None
    teacher_identity = teacher_endpoint.identity() if teacher_endpoint is not None else None
    data = {"kind": spec.data.kind, "options": spec.data.model_dump(mode="json"),
            "checksum": run_dir.stage_metrics("data").get("checksum")}
    budget = spec.budget.model_dump()
    for subject, lineage in lineages.items():
        options = {**(lineage.options or {}), "budget": budget} if lineage.role == "method" else lineage.options
        lineages[subject] = replace(lineage, teacher=teacher_identity, data=data, options=options)
    return evaluations, lineages


def _add_calls(endpoints: dict[str, Any], teacher, calls: dict[str, dict]) -> None:
    """Add a child process's endpoint accounting to this process's endpoints (for calls.json)."""
    accounted = accounted_endpoints(endpoints, teacher)
    for name, stats in calls.items():
        endpoint = accounted.get(name)
        if endpoint is None:
            continue
        for key, value in stats.items():
            if isinstance(value, (int, float)):
                endpoint.stats[key] = endpoint.stats.get(key, 0) + value


def _record_calls(run_dir: RunDirectory, endpoints: dict[str, Any], teacher) -> None:
    """Calls, cache hits, tokens, retries and cost per endpoint, kept even when the run fails."""
    calls = {name: dict(endpoint.stats) for name, endpoint in accounted_endpoints(endpoints, teacher).items()}
    write_json_atomic(run_dir.root / "calls.json", calls)
    run_dir.event("calls", endpoints=calls)


def load_data(run_dir: RunDirectory, generator: Component) -> dict[str, list[dict[str, Any]]]:
    """Build the dataset once, as a stage; a resumed run reads it back instead of rebuilding it."""
    def produce(folder: Path):
        built = generator.build_dataset()
        for split, rows in built.items():
            write_jsonl_atomic(folder / f"{split}.jsonl", rows)
        digest = hashlib.sha256(json.dumps(built, sort_keys=True, default=str).encode()).hexdigest()
        return {"checksum": digest, **{f"{split}_records": len(rows) for split, rows in built.items()}}

    path = run_dir.stage("data", produce)
    return {p.stem: read_jsonl(p) for p in sorted(path.glob("*.jsonl"))}


def plugin_version(host: PluginHost, role: str, kind: str) -> str | None:
    """The version of the plugin that registered ``kind`` of ``role`` (None when unknown)."""
    registered = host.components[role].get(kind)
    info = host.plugins.get(registered.plugin) if registered else None
    return info.version if info else None


# ---------------------------------------------------------------------------------------------------------
# Running one entry.

def run_entry(host: PluginHost, spec: SpecBase, run_dir, context, teacher, base_student, data, evaluators,
              entry: BaseModel, seed: int, seeded: bool) -> SubjectResults:
    """Train ``entry`` at ``seed`` on a fresh student and evaluate it with every evaluator (resumable stages).
    Returns the trained model's lineage (what it consumed, its info and options) and its evaluations."""
    label = entry_label(entry)
    method = _build(host, "method", entry, context)
    seed_everything(derive_seed(seed, "student"))  # a student that initialises randomly does so from the seed
    job = MethodJob(label, method, teacher, base_student.fresh(), data, spec.budget, seed, run_dir, context,
                    seeded=seeded)
    trained = method.run(job)
    evaluations = []
    for evaluator_label, evaluator in evaluators:
        seed_everything(derive_seed(seed, "eval", evaluator_label))  # sampled evaluations too
        stage = f"{entry_stage_prefix('eval', label, seed, seeded)}/{evaluator_label}"
        evaluations.append(evaluate_subject(run_dir, label, trained, evaluator_label, evaluator, "method",
                                            stage=stage, seed=seed,
                                            version=plugin_version(host, "evaluator", evaluator.name)))
    lineage = Lineage("method", method=entry.kind, seeds=(seed,), path=str(trained.path or ""),
                      options=entry.model_dump(mode="json"), budget=job.summary(), extra=dict(job.info) or None)
    return SubjectResults(label, lineage, tuple(evaluations))


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
        return {"user_error": list(exc.lines)}
    calls = {name: dict(endpoint.stats) for name, endpoint in accounted_endpoints(endpoints, teacher).items()}
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
                     poll: float = 0.1) -> tuple[list[SubjectResults], list[dict[str, dict]]]:
    """Run ``tasks`` through submitit, at most ``options.jobs`` jobs at a time locally (one per GPU when GPUs are
    used; see ``lanes``); returns their outcomes in task order and the endpoint calls each job made. The first
    failure stops the rest and is raised."""
    folder.mkdir(parents=True, exist_ok=True)
    executor = _executor(options, folder)
    outcomes: list[SubjectResults | None] = [None] * len(tasks)
    calls: list[dict[str, dict]] = []
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
                if done:  # a lane that claimed no task made no calls
                    calls.append(result["calls"])
            if not finished:
                time.sleep(poll)
    finally:
        for job, _ in running.values():  # a failure or Ctrl-C: no entry keeps running unattended
            job.cancel(check=False)
    return outcomes, calls  # type: ignore[return-value]


def _job_result(job, task: EntryTask) -> dict[str, Any]:
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
