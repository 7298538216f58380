"""docs/architecture.md names the modules a spec passes through; every one it names must exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"stillroom.plugins": "plugins", "stillroom.benchmarks": "benchmarks", "stillroom": "core"}


def module_path(dotted: str) -> Path | None:
    """The file or package folder of a dotted ``stillroom...`` name (``stillroom.cli:main`` is its module)."""
    dotted = dotted.split(":")[0]
    for prefix, folder in FOLDERS.items():
        if dotted == prefix or dotted.startswith(prefix + "."):
            rest = dotted[len(prefix) + 1:].split(".") if dotted != prefix else []
            base = ROOT.joinpath(folder, *rest)
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if rest and candidate.is_file():
                    return candidate
            return base / "__init__.py" if (base / "__init__.py").is_file() else None
    return None


def exists(dotted: str) -> bool:
    """A module, or a public name of one (``stillroom.Job``)."""
    import importlib

    if module_path(dotted) is not None:
        return True
    parent, _, name = dotted.split(":")[0].rpartition(".")
    return module_path(parent) is not None and hasattr(importlib.import_module(parent), name)


def named_modules(text: str) -> tuple[list[str], list[str]]:
    spans = re.findall(r"`([^`]+)`", text)
    paths = [s for s in spans if re.fullmatch(r"(core|plugins|benchmarks|perf|tests)/[\w/]+\.py", s)]
    dotted = [s for s in spans if re.fullmatch(r"stillroom(\.\w+)+(:\w+)?", s)]
    return paths, dotted


def test_every_module_named_in_the_architecture_page_exists():
    paths, dotted = named_modules((ROOT / "docs" / "architecture.md").read_text())
    assert len(paths) >= 15 and len(dotted) >= 4  # the page walks the whole way
    missing = [p for p in paths if not (ROOT / p).is_file()] + [d for d in dotted if not exists(d)]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_the_check_catches_a_missing_module():
    paths, dotted = named_modules("`core/nowhere.py` and `stillroom.nowhere` and `stillroom.cli:main`")
    assert paths == ["core/nowhere.py"] and not (ROOT / paths[0]).is_file()
    assert not exists("stillroom.nowhere") and not exists("stillroom.Nowhere") and exists("stillroom.Job")
    assert module_path("stillroom.cli:main") == ROOT / "core" / "cli.py"
    assert module_path("stillroom.benchmarks.harness") == ROOT / "benchmarks" / "harness" / "__init__.py"
