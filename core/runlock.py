"""The exclusive lock of a run folder: two processes never run the stages of one run at once.

``hold(folder)`` takes an ``flock`` on ``<folder>/.lock`` for the rest of the process (the kernel drops it when
the process ends, killed or not, so a stale lock cannot outlive its holder) and writes who holds it: pid, host
and start time. A second ``run --resume`` of the same spec finds the lock taken and fails with one line naming
the holder, instead of training the same stage twice.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from stillroom.errors import UserError

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # folder -> open descriptor: re-entrant within one process (an in-process resume)


def hold(folder: Path) -> None:
    """Take the lock of ``folder`` (no-op when this process holds it already); a UserError when another does."""
    import fcntl

    folder = Path(folder).resolve()
    if folder in _held:
        return
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"another stillroom process is running this run ({holder(folder)}); wait for it to finish "
                        "or stop it first", str(folder)) from None
    except OSError:
        os.close(fd)  # a file system without flock (some network mounts): run unlocked rather than not at all
        return
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat()}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    _held[folder] = fd


def release(folder: Path) -> None:
    """Give the lock of ``folder`` back (the end of a run; process exit does it too)."""
    fd = _held.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)


def holder(folder: Path) -> str:
    """Who holds the lock, as the lock file says: ``pid 123 on host h since 2026-...``."""
    try:
        info = json.loads((Path(folder) / LOCK_FILE).read_text())
        return f"pid {info['pid']} on host {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
