"""The run folder, and keeping it safe to use: atomic writes, resumable stages, the folder's lock and checks.

A run lives in ``<output_dir>/<name>/<id>/`` with the resolved spec, a manifest, ``events.jsonl`` and one
folder per stage under ``stages/``. A stage is produced in a ``.partial`` folder, renamed into place and
marked with ``.done``, so a crash leaves every finished stage on disk and ``--resume`` continues after it
(``find_resumable``). Before the first stage the run checks every place it will write at the end
(``check_before_run``), takes the folder's exclusive lock (``hold_lock``: two processes never run the stages
of one run), and removes a folder it created when it fails before any stage finished (``discard_unstarted``).

This module owns files and folders only: it runs no component and knows no method, budget or result.
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
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable


from stillroom import paths
from stillroom.cache import open_sqlite
from stillroom.roles import UserError

if TYPE_CHECKING:
    from stillroom.plugin_manager import PluginHost
    from stillroom.runs import Run

DONE = ".done"
FINISHED = "FINISHED"


# ---------------------------------------------------------------------------------------------------------
# Atomic files.

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
    """Write ``value`` as indented JSON: to a temporary file first, renamed over ``path`` (never half written)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with naming(path, cleanup=tmp):
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows) -> None:
    """Write ``rows`` as JSON Lines, atomically like ``write_json_atomic``."""
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
    """The SHA-256 of a file's bytes (the manifest's data files)."""
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

    def __init__(self, root: Path, host: "PluginHost | None" = None, run: "Run | None" = None):
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
        return records_stage(self.stage, name, compute, filename)


def records_stage(stage: Callable[[str, Callable[[Path], dict | None]], Path], name: str,
                  compute: Callable[[], list[dict]], filename: str = "records.jsonl") -> list[dict]:
    """Run ``compute()`` once as stage ``name`` of ``stage`` (a run folder's or a job's, which counts what it used),
    keep its records as JSON lines, and return them (read back from the file on resume)."""
    def produce(folder: Path):
        rows = compute()
        write_jsonl_atomic(folder / filename, rows)
        return {"records": len(rows)}

    return read_jsonl(stage(name, produce) / filename)


# ---------------------------------------------------------------------------------------------------------
# Run ids, the manifest, and finding a run to resume.

def new_run_id(digest: str = "") -> str:
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


def run_containing(path: str | Path) -> str | None:
    """The id of the run whose folder holds ``path`` (a model a run trained), from the nearest ``manifest.json``
    above it; None for a path outside every run folder."""
    here = Path(path).expanduser().absolute()
    for folder in (here, *here.parents):
        manifest = folder / "manifest.json"
        if manifest.is_file() and (folder / "stages").is_dir():
            try:
                found = json.loads(manifest.read_text()).get("run_id")
            except (OSError, ValueError, AttributeError):
                return None
            return found if isinstance(found, str) else None
    return None


def write_manifest(folder: Path, run_id: str, spec: "SpecBase", digest: str, spec_path: Path, host: "PluginHost",
                   data_files: list[Path]) -> None:
    """The files a new run folder starts with: the resolved spec (``spec.json``), a copy of the spec file, and
    ``manifest.json`` (ids, seeds, versions, platform, git commit, and the checksums of ``data_files``)."""
    write_json_atomic(folder / "spec.json", spec.model_dump(mode="json"))
    shutil.copyfile(spec_path, folder / ("spec" + spec_path.suffix))
    write_json_atomic(folder / "manifest.json", {
        "run_id": run_id, "name": spec.name, "spec_hash": digest, "seed": spec.seed, "seeds": spec.seeds or [spec.seed],
        "created": datetime.now(timezone.utc).isoformat(), "versions": versions(host),
        "python": platform.python_version(), "platform": platform.platform(), "git_sha": git_sha(spec_path.parent),
        "data_files": {str(f): file_checksum(f) for f in data_files if f.is_file()},
    })


def versions(host: "PluginHost") -> dict[str, Any]:
    """For the manifest: the versions of stillroom, its main libraries and every loaded plugin."""
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
    """For the manifest: the commit checked out at ``folder`` (None outside a git work tree)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# ---------------------------------------------------------------------------------------------------------
# Before the first stage: the checks, the lock, and removing a folder that never started.

def check_before_run(spec: "SpecBase", output_dir: Path) -> None:
    """Fail now, with one located line, if the run could not write its results at the end."""
    cache = paths.cache_dir()
    check_database(cache / "calls.sqlite", "call cache")
    home = paths.home_dir()
    check_database(home / "leaderboard.sqlite", "results store")
    check_output_folder(output_dir, "output_dir")
    for index, entry in enumerate(spec.evaluators):
        check_data_dir(getattr(entry, "data_dir", None), f"evaluators[{index}].data_dir")


def check_database(path: Path, what: str) -> None:
    """An existing SQLite file must open and pass ``PRAGMA quick_check`` (a missing one is created later)."""
    if not path.exists():
        return
    if not path.is_file():
        raise UserError(f"the {what} is not a file", str(path))
    open_sqlite(path, what, readonly=True).close()


def check_output_folder(folder: Path, location: str) -> None:
    """``folder`` is usable (``paths.usable_folder``) and really takes a file: under /proc or /sys, or on a
    read-only mount, the permission bits say writable and the write still fails."""
    paths.usable_folder(folder, location)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".stillroom-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write in {folder}: {exc.strerror or exc}", location) from None


def check_data_dir(value: Any, location: str) -> None:
    """A configured data folder must exist and hold something (an empty one would fail after training)."""
    if not value:
        return
    folder = Path(str(value)).expanduser()
    if not folder.exists():
        raise UserError(f"no such folder: {folder}", location)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder", location)
    if not any(folder.iterdir()):
        raise UserError(f"{folder} is empty", location)


def discard_unstarted(folder: Path, created: bool, *, rebuildable: tuple[str, ...] = ()) -> None:
    """Remove ``folder`` when this run ``created`` it and no stage in it finished: a run that failed its checks
    leaves no folder behind (and no half run for ``--resume`` to pick up). The ``rebuildable`` stages (a data
    stage that only read files) do not count, but then any other stage that has begun (a partial output, a
    mid-stage checkpoint) keeps the folder, as a finished one does."""
    if not created or not folder.is_dir():
        return
    stages = folder / "stages"
    begun = list(stages.iterdir()) if stages.is_dir() else []
    others = [p for p in begun if p.name.removesuffix(".partial") not in rebuildable]
    if any(p.is_dir() and any(p.rglob(".done")) for p in others):
        return
    if rebuildable and (others or (folder / "checkpoints").exists()):
        return
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    try:  # the <output_dir>/<name> folder too, when this run was its only one
        parent.rmdir()
    except OSError:
        pass


# The exclusive lock: ``hold_lock`` takes an ``flock`` on ``<folder>/.lock`` for the rest of the process (the
# kernel drops it when the process ends, killed or not, so a stale lock cannot outlive its holder) and writes who
# holds it, so a second `run --resume` of the same run fails with one line naming the holder instead of training
# the same stage twice.
LOCK_FILE = ".lock"
_held_locks: dict[Path, int] = {}  # folder -> open descriptor: re-entrant within one process (an in-process resume)


def hold_lock(folder: Path) -> None:
    """Take the lock of ``folder`` (no-op when this process holds it already); a UserError when another does."""
    import fcntl

    folder = Path(folder).resolve()
    if folder in _held_locks:
        return
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"another stillroom process is running this run ({lock_holder(folder)}); wait for it to finish "
                        "or stop it first", str(folder)) from None
    except OSError:
        os.close(fd)  # a file system without flock (some network mounts): run unlocked rather than not at all
        return
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat()}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    _held_locks[folder] = fd


def release_lock(folder: Path) -> None:
    """Give the lock of ``folder`` back (the end of a run; process exit does it too)."""
    fd = _held_locks.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)


def lock_holder(folder: Path) -> str:
    """Who holds the lock, as the lock file says: ``pid 123 on host h since 2026-...``."""
    try:
        info = json.loads((Path(folder) / LOCK_FILE).read_text())
        return f"pid {info['pid']} on host {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
