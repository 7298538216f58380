import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_holds_only_the_stillroom_namespace(tmp_path):
    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheel = next(tmp_path.glob("stillroom-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if ".dist-info/" not in n]
    assert code and all(n.startswith("stillroom/") for n in code), [n for n in code if not n.startswith("stillroom/")]
    assert "stillroom/hookspecs.py" in code and "stillroom/plugins/hf/__init__.py" in code
    assert "stillroom/benchmarks/harness/bbh.py" in code and "stillroom/registry.toml" in code
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[stillroom]" in entry_points and "hf = stillroom.plugins.hf" in entry_points


def test_folder_names_are_not_importable(tmp_path):
    for name in ("core", "plugins", "benchmarks"):
        out = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, name


def test_every_package_folder_is_listed():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    mapping = {"core": "stillroom", "plugins": "stillroom.plugins", "benchmarks": "stillroom.benchmarks"}
    found = set()
    for folder, package in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found == declared


def test_first_party_plugins_are_entry_points_of_the_public_group():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["stillroom"]
    packages = {p.name for folder in ("plugins", "benchmarks") for p in (ROOT / folder).iterdir()
                if (p / "__init__.py").exists()}
    assert set(entry_points) == packages
    assert all(v.startswith(("stillroom.plugins.", "stillroom.benchmarks.")) for v in entry_points.values())
