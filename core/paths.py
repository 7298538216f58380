"""Where stillroom keeps things on disk: the call and model cache, the results store, and benchmark data.

Each location honours an environment variable first, so tests and CI can point everything at a scratch
folder, then falls back to the per-user directories of the platform. Content-keyed cache folders (named by
``content_digest``, written once by ``fill_once``) let a component reuse what it derived from its inputs.
"""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import platformdirs

from stillroom.roles import UserError


def cache_dir() -> Path:
    """The call cache and cached models: ``STILLROOM_CACHE_DIR`` or the per-user cache directory."""
    path = Path(os.environ.get("STILLROOM_CACHE_DIR") or platformdirs.user_cache_dir("stillroom"))
    return usable_folder(path, "STILLROOM_CACHE_DIR" if os.environ.get("STILLROOM_CACHE_DIR") else "cache folder")


def home_dir() -> Path:
    """The results store: ``STILLROOM_HOME`` or the per-user data directory."""
    path = Path(os.environ.get("STILLROOM_HOME") or platformdirs.user_data_dir("stillroom"))
    return usable_folder(path, "STILLROOM_HOME" if os.environ.get("STILLROOM_HOME") else "home folder")


def usable_folder(path: Path, location: str) -> Path:
    """``path``, created if missing; a UserError at ``location`` when it is a file, cannot be created or is not
    writable, so an unusable folder fails before any work instead of after it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot use {path} as a folder: {exc.strerror or exc}", location) from None
    if not path.is_dir():
        raise UserError(f"{path} is not a folder", location)
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{path} is not writable", location)
    return path


def data_root() -> Path | None:
    """A local mirror of benchmark data (``STILLROOM_DATA``), or None to load from the hub."""
    value = os.environ.get("STILLROOM_DATA")
    return Path(value).expanduser().resolve() if value else None


def content_digest(parts: Any) -> str:
    """A short digest of JSON-able ``parts`` (key order does not matter): the name of a content-keyed folder."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_fingerprint(path: Path) -> list[Any]:
    """What identifies a file's version cheaply in a content digest: its path, size and modification time."""
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def fill_once(folder: Path, fill: Callable[[Path], Any], *, marker: str) -> Any:
    """Make ``folder`` once, atomically, and return the JSON value kept in its ``marker`` file.

    ``fill(scratch)`` writes the contents into an empty scratch folder beside ``folder`` and returns the value;
    the scratch folder is then renamed into place, so readers never see a half-written folder. A finished
    folder (one with its marker) is reused as is; when another process finishes the same folder first, its
    copy wins."""
    done = folder / marker
    if not done.is_file():
        scratch = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        value = fill(scratch)
        (scratch / marker).write_text(json.dumps(value), encoding="utf-8")
        try:
            scratch.rename(folder)
        except OSError:  # another process finished the same folder first
            shutil.rmtree(scratch, ignore_errors=True)
    return json.loads(done.read_text(encoding="utf-8"))


def mirror_folder(configured: str | None, default: Path | None, *, label: str, location: str) -> Path | None:
    """The local copy of a benchmark's data to read, or None to load it from the hub.

    ``configured`` is the benchmark's ``data_dir`` option, which must name a folder; without it ``default``
    (the benchmark's folder in the data root, ``context.data_path(...)``) is used when a data root is set.
    ``label`` names the benchmark in messages; errors are located at ``location``."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise UserError(f"no such folder: {path}", location)
        return path.resolve()
    if default is None:
        return None
    if not default.is_dir():
        raise UserError(f"the data root has no {default.name} folder ({default}); set data_dir, or unset "
                        f"STILLROOM_DATA to load {label} from the hub", location)
    return default


# Labels, run names and other user-chosen names become folder names: one path segment, portable, short enough
# for every file system once a run id and a stage name are added to it.
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SLUG = re.compile(SLUG_PATTERN)


def slug_problem(name: str) -> str | None:
    """Why ``name`` cannot be a folder name (None when it can): one segment of letters, digits, ``.``, ``_``
    and ``-``, starting with a letter or digit, at most 64 characters."""
    if not isinstance(name, str) or not name:
        return "must not be empty"
    if _SLUG.match(name):
        return None
    if len(name) > 64:
        return f"is {len(name)} characters long; use at most 64"
    return (f"{shorten(repr(name), 80)} is not a usable name: use letters, digits, '.', '_' and '-', starting with "
            "a letter or digit")


def safe_name(text: str, limit: int = 64) -> str:
    """A folder name for free text such as a URL (``http://host:8000/v1`` -> ``http-host-8000-v1``): anything but
    letters, digits, ``.``, ``_`` and ``-`` becomes ``-``; long or altered text keeps a short digest, so two
    different texts never share a folder."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"
    if cleaned == text and len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[:limit - 9].rstrip('-.')}-{digest}"


def inside(root: Path, path: Path, location: str | None = None) -> Path:
    """``path`` (absolute, or relative to ``root``) when it stays under ``root`` after resolving ``..`` and
    symlinks; a UserError otherwise, so no name can make a run write outside its folder."""
    root = Path(root).resolve()
    target = (root / path).resolve()
    if target != root and root not in target.parents:
        raise UserError(f"{shorten(str(path), 120)} would be written outside {root}", location or str(root))
    return target


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters for a message, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped); bytes that are not UTF-8 are a UserError
    at ``file:line``."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"not UTF-8 text (byte 0x{data[exc.start:exc.start + 1].hex()}); save the file as UTF-8",
                        f"{path}:{line}") from None
