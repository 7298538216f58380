"""The call cache: a content-addressed SQLite store of model calls.

A key is the hash of the endpoint's identity, the request (messages, sampling parameters) and the sample
index, so re-running a spec makes no repeated call and a killed run resumes without paying twice. WAL mode
and ``INSERT OR IGNORE`` make concurrent writers from several processes safe. It stores answers, never
credentials: endpoint identities are built without secrets.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_endpoint ON calls(endpoint);
"""


def raise_if_disk_full(exc: BaseException, path: Path) -> None:
    """Turn SQLite's "database or disk is full" / write I/O error into an OSError naming the database, which
    the CLI reports in one line (exit 2)."""
    import errno

    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in (sqlite3.SQLITE_FULL,
                                                                                sqlite3.SQLITE_IOERR):
        raise OSError(errno.ENOSPC, f"{exc} (is the disk full?)", str(path)) from exc


def open_sqlite(path: Path, what: str, *, readonly: bool = False, **connect: Any) -> sqlite3.Connection:
    """A connection to the SQLite file at ``path`` that is known whole, in WAL mode unless ``readonly``.

    The one opener for stillroom's databases (call cache, results store, and the pre-flight check of both). A
    damaged file would answer with whatever rows its intact pages hold, so ``PRAGMA quick_check`` runs first
    (one read of every page: cheap at these sizes) and a failure is a UserError naming the file. Switching a
    fresh file to WAL needs an exclusive lock, and SQLite may answer "database is locked" at once, without its
    busy handler, while another process is creating the same file; that switch is retried for up to a minute.
    """
    from stillroom.roles import UserError

    target = f"file:{path}?mode=ro" if readonly else str(path)
    db = sqlite3.connect(target, uri=readonly, timeout=60, **connect)
    try:
        found = [row[0] for row in db.execute("PRAGMA quick_check").fetchmany(3)]
    except sqlite3.DatabaseError as exc:
        db.close()
        raise UserError(f"the {what} cannot be read ({exc}); move the file away to start anew", str(path)) from None
    if found != ["ok"]:
        db.close()
        detail = "; ".join(map(str, found))
        raise UserError(f"the {what} is damaged (quick_check: {detail[:150]}); move the file away to start anew",
                        str(path))
    if readonly:
        return db
    deadline = time.monotonic() + 60
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.05)


def call_key(identity: dict[str, Any], request: dict[str, Any], sample: int) -> str:
    blob = json.dumps({"endpoint": identity, "request": request, "sample": sample}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def endpoint_label(identity: dict[str, Any]) -> str:
    return redact_credentials(json.dumps(identity, sort_keys=True))


# ``scheme://user:password@host``: the user-info part of a URL, which may hold an API key.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@\"']+@")


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed: what identifies a server, never how to log in to it."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>", url)


def redact_credentials(text: str) -> str:
    """``text`` with the user-info of every URL in it removed (for labels, messages and stored values)."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>", text) if "@" in text else text


class CallCache:
    """Get and put JSON values by key; one SQLite file, shared safely between threads and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path, "call cache", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        return found

    def get(self, key: str) -> Any | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: list[tuple[str, str, Any]]) -> None:
        """Store ``(key, endpoint_label, value)`` triples in one transaction; existing keys are kept."""
        now = time.time()
        rows = [(k, e, json.dumps(v, ensure_ascii=False), now) for k, e, v in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                    self._db.execute("ROLLBACK")
                raise_if_disk_full(exc, self.path)
                raise

    def put(self, key: str, endpoint: str, value: Any) -> None:
        self.put_many([(key, endpoint, value)])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            per = self._db.execute("SELECT endpoint, COUNT(*) FROM calls GROUP BY endpoint ORDER BY 2 DESC").fetchall()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists())
        # labels written before credentials were stripped from identities may still hold some: never show them
        return {"path": str(self.path), "entries": total, "bytes": size,
                "endpoints": [{"endpoint": redact_credentials(e), "entries": n} for e, n in per]}

    def clear(self) -> int:
        with self._lock:
            removed = self._db.execute("DELETE FROM calls").rowcount
            self._db.execute("VACUUM")
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CacheWriter:
    """Stores answers from a background thread, so the caller (an event loop answering many requests) never
    waits on SQLite. Each ``put`` is queued; the thread commits what has queued up in one transaction, at most
    once per ``interval`` seconds: an answer is on disk within about ``interval`` of arriving (what a kill -9
    can lose), and a stream of answers costs one commit per interval instead of one per answer. ``close``
    commits the rest and re-raises a failed commit (a full disk)."""

    def __init__(self, cache: CallCache, *, interval: float = 0.02, max_batch: int = 512):
        self.cache = cache
        self.interval = interval
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._last_commit = 0.0
        self._thread = threading.Thread(target=self._run, name="stillroom-cache-writer", daemon=True)
        self._thread.start()

    def put(self, rows: list[tuple[str, str, Any]]) -> None:
        if self._error is not None:
            raise self._error
        if rows:
            self._queue.put(rows)

    def _run(self) -> None:
        while True:
            rows = self._queue.get()
            if rows is None:
                return
            wait = self._last_commit + self.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            batch = list(rows)
            done = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                batch.extend(more)
            self._last_commit = time.monotonic()
            if self._error is None:
                try:
                    self.cache.put_many(batch)
                except BaseException as exc:  # kept for the caller: this thread has no one to tell
                    self._error = exc
            if done:
                return

    def close(self) -> None:
        """Commit everything queued and stop the thread; raises the first failed commit's error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
