import json
import subprocess
import sys
from pathlib import Path

import pytest

from stillroom.roles import UserError
from stillroom.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_entries_match_what_is_registered(stillroom_host):
    registry = load_registry(ROOT / "registry.toml")
    registered: dict[str, set] = {}
    for role, table in stillroom_host.components.items():
        for kind, entry in table.items():
            registered.setdefault(entry.plugin, set()).add((role, kind))
    builtin = {name: entry for name, entry in registry.plugins.items() if entry.builtin}
    assert set(builtin) == set(stillroom_host.plugins), "every first-party plugin needs a builtin registry entry"
    for name, entry in builtin.items():
        assert {(c.role, c.kind) for c in entry.components} == registered.get(name, set()), name
        assert entry.module == stillroom_host.plugins[name].module


def test_packaged_registry_is_the_top_level_file():
    from stillroom.registry import registry_path

    assert registry_path().resolve() == (ROOT / "registry.toml").resolve()


def test_invalid_registry_is_a_clear_error(tmp_path):
    bad = tmp_path / "registry.toml"
    bad.write_text('[plugins.x]\nsummary = "s"\nmodule = "m"\npip = "p"\ncomponents = [{role = "teacher", kind = "t", extra = 1}]\n')
    with pytest.raises(UserError, match="registry.toml"):
        load_registry(bad)


def test_install_refuses_unknown_names_and_prints_the_plan(stillroom_env):
    cli = [sys.executable, "-m", "stillroom.cli", "plugins", "install"]
    unknown = subprocess.run([*cli, "helo"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown plugin (did you mean 'hello'?)" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    builtin = subprocess.run([*cli, "hf"], capture_output=True, text=True)
    assert builtin.returncode == 0 and "built in" in builtin.stdout
    info = subprocess.run([sys.executable, "-m", "stillroom.cli", "plugins", "info", "hello"], capture_output=True, text=True)
    assert json.loads(info.stdout)["pip"] == "stillroom-hello"
