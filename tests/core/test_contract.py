import inspect
from pathlib import Path

from stillroom import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("stillroom_")]


def test_every_hook_has_a_docstring_and_a_row_in_the_plugin_guide():
    readme = (ROOT / "README.md").read_text()
    guide = readme[readme.index("## Writing a plugin"):]
    assert len(HOOKS) == 13
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        assert (fn.__doc__ or "").strip(), name
        params = ", ".join(inspect.signature(fn).parameters)
        assert f"`{name}({params})`" in guide, f"{name} is not documented in README's plugin guide"


def test_core_stays_small():
    for module in ("hookspecs.py", "plugin_manager.py"):
        assert len((ROOT / "core" / module).read_text().splitlines()) < 300, module


def test_core_imports_no_plugin_or_benchmark():
    for path in (ROOT / "core").glob("*.py"):
        text = path.read_text()
        assert "stillroom.plugins." not in text.replace("stillroom.plugins.<", ""), path.name
        assert "stillroom.benchmarks." not in text, path.name


def test_plugins_and_benchmarks_do_not_import_each_other():
    import re

    crossings, packages = [], 0
    for folder in ("plugins", "benchmarks"):
        for package in (ROOT / folder).iterdir():
            if not (package / "__init__.py").exists():
                continue
            packages += 1
            for path in package.rglob("*.py"):
                for match in re.finditer(r"stillroom\.(plugins|benchmarks)\.(\w+)", path.read_text()):
                    if (match.group(1), match.group(2)) != (folder, package.name):
                        crossings.append(f"{path.relative_to(ROOT)} imports {match.group(0)}")
    assert packages >= 17 and crossings == []


def test_every_component_class_is_documented(stillroom_host):
    for role, table in stillroom_host.components.items():
        for kind, registered in table.items():
            cls = registered.cls
            assert (cls.__doc__ or "").strip(), f"{role} {kind} has no docstring"
            for field, info in cls.Config.model_fields.items():
                assert info.description, f"{role} {kind}: option {field!r} has no description"
            assert cls.Config.model_config.get("extra") == "forbid", f"{role} {kind}: Config must forbid extras"
