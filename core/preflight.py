"""Checks a run makes before its first stage, so a run that cannot finish fails in seconds, not after training.

``check_before_run`` opens every place the run will write or read at the end (the call cache, the results
store, the output folder, evaluators' data folders) and turns what it finds wrong into one ``location: message``
UserError. ``discard_unstarted`` removes a run folder this run created when the run fails before any stage
finished (or, past a data stage that only read files, before any other stage began), so a spec that fails its
checks leaves nothing behind. This module only checks and removes; it never starts work.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stillroom import paths
from stillroom.cache import open_sqlite
from stillroom.errors import UserError


def check_before_run(spec: BaseModel, output_dir: Path) -> None:
    """Fail now, with one located line, if the run could not write its results at the end."""
    cache = paths.cache_dir()
    check_database(cache / "calls.sqlite", "call cache")
    home = paths.home_dir()
    check_database(home / "leaderboard.sqlite", "results store")
    check_output_folder(output_dir, "output_dir")
    for index, entry in enumerate(getattr(spec, "evaluators", None) or []):
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
