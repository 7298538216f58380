"""Runs: the run directory, resumable stages, and the lifecycle of ``stillroom run SPEC``.

A run lives in ``<output_dir>/<name>/<id>/`` with the resolved spec, a manifest, ``events.jsonl`` and one
folder per stage under ``stages/``. A stage is produced in a ``.partial`` folder, renamed into place and
marked with ``.done``, so a crash leaves every finished stage on disk and ``--resume`` continues after it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from stillroom import paths, preflight, runlock
from stillroom.context import Context
from stillroom.errors import UserError
from stillroom.plugin_manager import PluginHost, get_host
from stillroom.roles import Component, Student, Subject
from stillroom.seeding import derive_seed, seed_everything
from stillroom.specs import Budget, spec_hash
from stillroom.store import BUDGET_COLUMNS

DONE = ".done"
FINISHED = "FINISHED"


_RUST_IO = {"os error 28": errno.ENOSPC, "os error 27": errno.EFBIG, "os error 122": errno.EDQUOT}


@contextlib.contextmanager
def naming(path: Path, cleanup: Path | None = None):
    """Writes to ``path``: an OSError that names no file is given ``path`` (a full disk then says where), a
    library's wrapped I/O error for a full disk (safetensors: "... (os error 28)") becomes that OSError, and
    ``cleanup`` (a temporary file or folder) is removed when the write fails."""
    try:
        yield
    except BaseException as exc:
        if cleanup is not None:
            if cleanup.is_dir():
                shutil.rmtree(cleanup, ignore_errors=True)
            else:
                cleanup.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        elif not isinstance(exc, OSError):
            code = next((c for text, c in _RUST_IO.items() if text in str(exc)), None)
            if code is not None:
                raise OSError(code, os.strerror(code), str(path)) from exc
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with naming(path, cleanup=tmp):
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with naming(path, cleanup=tmp):
        with tmp.open("w") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)


def read_jsonl(path: Path, *, numbered: bool = False, objects: bool = False, limit: int | None = None,
               encoding: str | None = None) -> list[Any]:
    """The values of a JSON Lines file's non-blank lines; a malformed line is a UserError at ``file:line``.

    ``numbered``: ``(line number, value)`` pairs instead; ``objects``: a line that is not a JSON object is a
    UserError too; ``limit``: stop after that many values (None or 0: all; later lines are not read);
    ``encoding``: the file's text encoding (the locale's by default).
    """
    rows = []
    with Path(path).open(encoding=encoding) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"malformed JSON line: {exc.msg}", f"{path}:{number}") from None
            if objects and not isinstance(row, dict):
                raise UserError("each line must be a JSON object", f"{path}:{number}")
            rows.append((number, row) if numbered else row)
            if limit and len(rows) >= limit:
                break
    return rows


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def process_rank() -> int:
    """This process's rank under ``accelerate launch`` / torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def _wait_for(marker: Path, poll: float = 0.5) -> None:
    """Wait for rank 0 to finish a stage; give up after STILLROOM_RANK_WAIT seconds (default 12 hours)."""
    deadline = time.monotonic() + float(os.environ.get("STILLROOM_RANK_WAIT", 12 * 3600))
    while not marker.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"rank {process_rank()}: gave up waiting for rank 0 to finish {marker.parent}")
        time.sleep(poll)


class RunDirectory:
    """One run's folder: stages with completion markers, an append-only event log, atomic JSON writes."""

    def __init__(self, root: Path, host: PluginHost | None = None, run: "Run | None" = None):
        self.root = Path(root)
        self.host = host
        self.run = run
        (self.root / "stages").mkdir(parents=True, exist_ok=True)

    def event(self, event: str, **fields: Any) -> None:
        if process_rank() != 0:
            return
        line = json.dumps({"time": time.time(), "event": event, **fields}, default=str)
        with naming(self.root / "events.jsonl"), (self.root / "events.jsonl").open("a") as log:
            log.write(line + "\n")
            log.flush()

    def stage_path(self, name: str) -> Path:
        paths.inside(self.root / "stages", Path(name), f"stage {name}")  # no name may lead out of the run folder
        return self.root / "stages" / name

    def is_done(self, name: str) -> bool:
        return (self.stage_path(name) / DONE).exists()

    def stage(self, name: str, produce: Callable[[Path], dict | None]) -> Path:
        """Run ``produce(folder)`` once: skipped when the stage already finished, otherwise its output is
        written to a temporary folder and renamed into place. Returns the stage folder."""
        final = self.stage_path(name)
        if self.is_done(name):
            self.event("stage_skipped", stage=name)
            return final
        rank = process_rank()
        if rank != 0:
            # Under a multi-process launch every rank runs the work (training needs them all), but only
            # rank 0 writes the stage; the others drop their copy once rank 0 has marked it done.
            private = final.with_name(f"{final.name}.rank{rank}.partial")
            shutil.rmtree(private, ignore_errors=True)
            private.mkdir(parents=True)
            produce(private)
            _wait_for(final / DONE)
            shutil.rmtree(private, ignore_errors=True)
            return final
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.event("stage_started", stage=name)
        start = time.perf_counter()
        metrics = dict(produce(partial) or {})
        metrics.setdefault("seconds", round(time.perf_counter() - start, 3))
        write_json_atomic(partial / "stage.json", metrics)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        (final / DONE).touch()
        self.event("stage_finished", stage=name, metrics=metrics)
        if self.host is not None and self.run is not None:
            self.host.pm.hook.stillroom_stage_finished(run=self.run, stage=name, metrics=metrics)
        return final

    def stage_metrics(self, name: str) -> dict[str, Any]:
        path = self.stage_path(name) / "stage.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def jsonl_stage(self, name: str, compute: Callable[[], list[dict]], filename: str = "records.jsonl") -> list[dict]:
        """A stage whose output is a list of records, kept as JSONL."""
        def produce(folder: Path):
            rows = compute()
            write_jsonl_atomic(folder / filename, rows)
            return {"records": len(rows)}

        return read_jsonl(self.stage(name, produce) / filename)


# What a training stage consumed (``store.BUDGET_COLUMNS``), under these names in its stage.json and summed per
# entry by ``MethodJob.summary`` (averaged over seeds on the leaderboard). ``MethodJob.stage`` measures the API
# and time columns itself; the training engine reports the others.


def entry_stage_prefix(kind: str, label: str, seed: int, seeded: bool) -> str:
    """Where an entry's stages live: ``methods/<label>/`` (``kind`` "methods") or ``eval/<label>/``, with a
    ``seed<s>/`` level when the run trains several seeds. The one place that spells this layout."""
    return f"{kind}/{label}/seed{seed}" if seeded else f"{kind}/{label}"


def _endpoint_usage(endpoints: list[Any]) -> dict[str, float]:
    """Calls (cached or paid), tokens and cost so far, summed over ``endpoints``."""
    total = {"calls": 0.0, "paid": 0.0, "tokens": 0.0, "cost": 0.0}
    for endpoint in endpoints:
        stats = endpoint.stats
        total["calls"] += stats.get("requests", 0) + stats.get("cache_hits", 0)
        total["paid"] += stats.get("requests", 0)
        total["tokens"] += stats.get("prompt_tokens", 0) + stats.get("completion_tokens", 0) + stats.get("cached_tokens", 0)
        total["cost"] += stats.get("cost", 0.0) or 0.0
    return total


@dataclass
class MethodJob:
    """What a method gets: the roles, the data, the budget, and resumable stages under its own prefix.

    ``seed`` is this entry's seed; ``seeded`` says whether the run trains several seeds (the seed is then part
    of every stage path). Every stage reseeds Python, NumPy and torch from ``stage_seed(name)`` first, so an
    entry's result does not depend on what ran before it in the process."""

    label: str
    method: Component
    teacher: Any
    student: Student
    data: dict[str, list[dict[str, Any]]]
    budget: Budget
    seed: int
    run_dir: RunDirectory
    context: Context
    info: dict[str, Any] = field(default_factory=dict)
    seeded: bool = False

    @property
    def prefix(self) -> str:
        """This entry's stage folder, relative to ``stages/`` (``methods/<label>`` or ``methods/<label>/seed<s>``)."""
        return entry_stage_prefix("methods", self.label, self.seed, self.seeded)

    def _name(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def stage_path(self, name: str = "") -> Path:
        """The folder of this entry's stage ``name`` (of the entry itself when empty)."""
        return self.run_dir.stage_path(self._name(name) if name else self.prefix)

    def stage_metrics(self, name: str) -> dict[str, Any]:
        """The recorded metrics of this entry's finished stage ``name`` ({} when it has not finished)."""
        return self.run_dir.stage_metrics(self._name(name))

    def stage_seed(self, name: str) -> int:
        """The seed of stage ``name``: from the entry's seed and the stage's name within the entry (not its label
        or folder, so renaming an entry or adding seeds to a spec does not change what it trains)."""
        return derive_seed(self.seed, name)

    def checkpoint_dir(self, name: str) -> Path:
        """A folder for mid-stage checkpoints of stage ``name``: outside the stage's ``.partial`` folder (which a
        restarted stage deletes), so a killed stage can continue from it; removed once the stage is done."""
        folder = self.run_dir.root / "checkpoints" / self._name(name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def train_records(self) -> list[dict[str, Any]]:
        """The budget's training problems: the first ``budget.train_examples`` records of the train split (all
        when unset), the same ids for every method and seed, in an order fixed by this entry's seed alone."""
        import random

        rows = self.data.get("train") or []
        if not rows:
            raise UserError("the data has no 'train' split, or it is empty", f"methods[{self.label}]")
        chosen = list(rows[:self.budget.train_examples] if self.budget.train_examples else rows)
        random.Random(derive_seed(self.seed, "train_records")).shuffle(chosen)
        return chosen

    def _endpoints(self) -> list[Any]:
        found = list(self.context.endpoints.values())
        teacher_endpoint = getattr(self.teacher, "endpoint", None)
        if teacher_endpoint is not None and all(teacher_endpoint is not e for e in found):
            found.append(teacher_endpoint)
        return found

    def stage(self, name: str, produce: Callable[[Path], dict | None]) -> Path:
        """Run this entry's stage ``name`` (see ``RunDirectory.stage``), seeded from ``stage_seed(name)``; its
        metrics gain the API calls, tokens and cost it used, and its wall time."""
        def counted(folder: Path):
            seed_everything(self.stage_seed(name))
            before, start = _endpoint_usage(self._endpoints()), time.perf_counter()
            metrics = dict(produce(folder) or {})
            after = _endpoint_usage(self._endpoints())
            metrics.setdefault("teacher_calls", int(after["calls"] - before["calls"]))
            metrics.setdefault("teacher_calls_paid", int(after["paid"] - before["paid"]))
            metrics.setdefault("teacher_tokens", int(after["tokens"] - before["tokens"]))
            metrics.setdefault("cost", round(after["cost"] - before["cost"], 6))
            metrics.setdefault("wall_seconds", round(time.perf_counter() - start, 3))
            # kept under its old name for readers of earlier stage.json files
            metrics.setdefault("teacher_requests", metrics["teacher_calls_paid"])
            return metrics

        path = self.run_dir.stage(self._name(name), counted)
        checkpoints = self.run_dir.root / "checkpoints" / self._name(name)
        if process_rank() == 0 and checkpoints.exists() and self.run_dir.is_done(self._name(name)):
            shutil.rmtree(checkpoints, ignore_errors=True)
        return path

    def jsonl_stage(self, name: str, compute: Callable[[], list[dict]]) -> list[dict]:
        def produce(folder: Path):
            rows = compute()
            write_jsonl_atomic(folder / "records.jsonl", rows)
            return {"records": len(rows)}

        return read_jsonl(self.stage(name, produce) / "records.jsonl")

    def model_stage(self, name: str, train: Callable[[Student, Path], dict | None]) -> Student:
        """Train ``self.student`` with ``train(student, folder)`` and save it; on resume, load it instead."""
        def produce(folder: Path):
            metrics = train(self.student, folder) or {}
            with naming(folder / "model"):
                self.student.save(folder / "model")
            return metrics

        path = self.stage(name, produce)
        return self.student.load(path / "model")

    def summary(self) -> dict[str, Any]:
        """The budget columns (``BUDGET_COLUMNS``) summed over this entry's finished stages; a column no stage
        recorded is None rather than 0, so "not measured" never reads as "free"."""
        totals: dict[str, float | None] = dict.fromkeys(BUDGET_COLUMNS)
        for stage_file in sorted(self.stage_path().rglob("stage.json")):
            metrics = json.loads(stage_file.read_text())
            for column in BUDGET_COLUMNS:
                value = metrics.get(column)
                if column == "wall_seconds" and value is None:
                    value = metrics.get("seconds")  # stages recorded before wall_seconds existed
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    totals[column] = (totals[column] or 0) + value
        return {column: (round(value, 6) if isinstance(value, float) else value) for column, value in totals.items()}


def versions(host: PluginHost) -> dict[str, Any]:
    found = {}
    for dist in ("stillroom", "torch", "transformers", "trl", "lm-eval", "datasets", "pydantic", "pluggy", "openai"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    found["plugins"] = {name: {"distribution": p.distribution, "version": p.version, "status": p.status}
                        for name, p in host.plugins.items()}
    return found


def git_sha(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Run:
    """A run being executed: what observer hooks receive."""

    id: str
    name: str
    spec: BaseModel
    spec_hash: str
    dir: RunDirectory
    spec_path: Path


def _new_id(digest: str = "") -> str:
    """A fresh run id; every rank of one multi-process launch derives the same one."""
    if os.environ.get("STILLROOM_RUN_ID"):
        return os.environ["STILLROOM_RUN_ID"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"dist-{digest[:8]}-{os.environ.get('MASTER_PORT', '0')}"
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def find_resumable(output_dir: Path, name: str, digest: str) -> Path | None:
    """The newest unfinished run directory of this spec (same spec hash), if any."""
    base = output_dir / name
    if not base.exists():
        return None
    for folder in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        manifest = folder / "manifest.json"
        if (folder / FINISHED).exists() or not manifest.exists():
            continue
        if json.loads(manifest.read_text()).get("spec_hash") == digest:
            return folder
    return None


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
    ``seeds`` replaces the spec's seeds (``--seeds``); ``launch`` (``entries.LaunchOptions``) runs entries in
    parallel processes (``--jobs``, ``--launcher``)."""
    from stillroom.entries import LaunchOptions, load_run_spec

    from stillroom.leaderboard import render
    from stillroom.store import ResultsStore, record_run

    host = host or get_host()
    # absolute(), not resolve(): a symlinked spec (examples/quickstart.toml) keeps its runs next to the link
    spec_path = Path(spec_path).absolute()
    spec = load_run_spec(spec_path, host, seeds)
    launch = launch or LaunchOptions()
    digest = spec_hash(spec)
    output_dir = Path(output_dir).resolve() if output_dir is not None else (spec_path.parent / spec.output_dir).resolve()
    folder = find_resumable(output_dir, spec.name, digest) if resume else None
    if resume and folder is None and console:
        console.print(f"[yellow]no unfinished run of {spec.name} with this spec; starting a new one[/]")
    run_id = folder.name if folder else _new_id(digest)
    folder = folder or output_dir / spec.name / run_id
    preflight.check_before_run(spec, output_dir)  # cache, store, output and data folders: before any work
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
        runlock.hold(folder)  # a second `run --resume` of this run fails here, naming the holder

    if not (folder / "manifest.json").exists() and process_rank() == 0:
        write_json_atomic(folder / "spec.json", spec.model_dump(mode="json"))
        shutil.copyfile(spec_path, folder / ("spec" + spec_path.suffix))
        files = [Path(f) for c in [data_gen, *(e for _, e in evaluators)] for f in c.source_files()]
        write_json_atomic(folder / "manifest.json", {
            "run_id": run_id, "name": spec.name, "spec_hash": digest, "seed": spec.seed,
            "seeds": spec.seeds or [spec.seed],
            "created": datetime.now(timezone.utc).isoformat(), "versions": versions(host),
            "python": platform.python_version(), "platform": platform.platform(),
            "git_sha": git_sha(spec_path.parent),
            "data_files": {str(f): file_checksum(f) for f in files if f.is_file()},
        })
    run_dir.event("run_started" if not resume else "run_resumed", run_id=run_id)
    host.pm.hook.stillroom_run_started(run=run)

    # the data first: a missing or malformed data file is reported before any model is loaded (or trained)
    calls_before_data = _endpoint_usage(list(endpoints.values()))["calls"]
    try:
        data = load_data(run_dir, data_gen)
    except UserError:
        runlock.release(folder)
        preflight.discard_unstarted(folder, created, rebuildable=("data",))
        raise
    # a data stage that called no endpoint only read files: rebuilding it costs seconds, so it alone does not keep
    # the folder of a run that fails its checks (a student or teacher that cannot load, a method that refuses its
    # teacher) before any method stage begins; a data stage that generated does keep it
    rebuildable = ("data",) if _endpoint_usage(list(endpoints.values()))["calls"] == calls_before_data else ()
    teacher = None
    try:
        try:
            teacher = _build(host, "teacher", spec.teacher, context) if spec.teacher is not None else None
            base_student = _build(host, "student", spec.student, context)
            evaluated = _train_and_evaluate(host, spec, run, context, endpoints, teacher, base_student, data,
                                            evaluators, launch, folder / ("spec" + spec_path.suffix), seeds)
        finally:
            if process_rank() == 0:
                _record_calls(run_dir, endpoints, teacher)
    except UserError:
        if process_rank() == 0:
            runlock.release(folder)
            preflight.discard_unstarted(folder, created, rebuildable=rebuildable)
        raise
    lineage = {"teacher": teacher.endpoint.identity() if teacher is not None and getattr(teacher, "endpoint", None) else None,
               "data": {"kind": spec.data.kind, "options": spec.data.model_dump(mode="json"),
                        "checksum": run_dir.stage_metrics("data").get("checksum")},
               "budget": spec.budget.model_dump()}
    for item in evaluated:
        item.setdefault("options", {})
        if isinstance(item.get("options"), dict):
            item["options"] = {**item["options"], "budget": lineage["budget"]} if item["role"] == "method" else item["options"]
    if process_rank() != 0:
        return run
    rows = record_run(ResultsStore.default(), run, evaluated, lineage)
    (folder / "report.html").write_text(render(rows, "html", title=f"{spec.name} {run_id}"))
    host.pm.hook.stillroom_run_finished(run=run, results=rows)
    (folder / FINISHED).touch()
    run_dir.event("run_finished", rows=len(rows))
    runlock.release(folder)
    return run


def _train_and_evaluate(host: PluginHost, spec: BaseModel, run: Run, context: Context, endpoints, teacher,
                        base_student, data, evaluators, launch, spec_copy: Path, seeds_override) -> list[dict]:
    """Train and evaluate every method entry at every seed (in this process, or ``launch.jobs`` at a time in
    child processes), then evaluate the teacher and the base student once; returns the leaderboard items."""
    from stillroom.entries import EntryTask, leaderboard_items, run_entry, run_in_processes
    from stillroom.specs import reference_label, run_seeds

    run_dir = run.dir
    outcomes: list[dict[str, Any]] = []
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

        for outcome in run_in_processes(tasks, launch, run_dir.root / "jobs", log=log):
            _add_calls(endpoints, teacher, outcome.pop("calls", {}))
            outcomes.append(outcome)
    anchors = [("teacher", teacher)] if teacher is not None and spec.evaluate.teacher else []
    anchors += [("base", base_student)] if spec.evaluate.base else []
    evaluated = []
    for name, component in anchors:
        results = {label: evaluate_subject(run_dir, name, component, label, evaluator, name)
                   for label, evaluator in evaluators}
        evaluated.append({"label": name, "role": name, "kind": None, "seed": None, "summary": {}, "info": None,
                          "options": None, "path": str(getattr(component, "path", "") or ""), "results": results,
                          "versions": {label: _plugin_version(host, "evaluator", e.name) for label, e in evaluators}})
    # teacher and base first on the leaderboard
    return leaderboard_items(evaluated + outcomes, reference_label(spec, host), spec.name)


def _add_calls(endpoints: dict[str, Any], teacher, calls: dict[str, dict]) -> None:
    """Add a child process's endpoint accounting to this process's endpoints (for calls.json)."""
    teacher_endpoint = getattr(teacher, "endpoint", None)
    for name, stats in calls.items():
        endpoint = endpoints.get(name) or (teacher_endpoint if name == "teacher" else None)
        if endpoint is None:
            continue
        for key, value in stats.items():
            if isinstance(value, (int, float)):
                endpoint.stats[key] = endpoint.stats.get(key, 0) + value


def _record_calls(run_dir: RunDirectory, endpoints: dict[str, Any], teacher) -> None:
    """Calls, cache hits, tokens, retries and cost per endpoint, kept even when the run fails."""
    calls = {name: dict(endpoint.stats) for name, endpoint in endpoints.items()}
    teacher_endpoint = getattr(teacher, "endpoint", None)
    if teacher_endpoint is not None and all(teacher_endpoint is not e for e in endpoints.values()):
        calls["teacher"] = dict(teacher_endpoint.stats)
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


def evaluate_subject(run_dir: RunDirectory, subject_name: str, component, evaluator_label: str, evaluator,
                     role: str, *, stage: str | None = None) -> dict[str, Any]:
    """Evaluate one model with one evaluator as a resumable stage (``stage``, by default
    ``eval/<subject>/<evaluator>``); returns the stored metrics."""
    def produce(folder: Path):
        result = evaluator.evaluate(Subject.of(component, subject_name, role))
        write_jsonl_atomic(folder / "samples.jsonl", result.samples)
        write_json_atomic(folder / "result.json", {"metrics": [m.model_dump() for m in result.metrics],
                                                   "details": result.details})
        return {"n": max((m.n for m in result.metrics), default=0)}

    path = run_dir.stage(stage or f"eval/{subject_name}/{evaluator_label}", produce)
    result = json.loads((path / "result.json").read_text())
    result["samples_path"] = str(path / "samples.jsonl")
    return result


def _plugin_version(host: PluginHost, role: str, kind: str) -> str | None:
    registered = host.components[role].get(kind)
    info = host.plugins.get(registered.plugin) if registered else None
    return info.version if info else None
