import json
import os
import subprocess
import sys
import textwrap

import pytest

from stillroom.plugin_manager import make_host
from stillroom.roles import UserError
from stillroom.testing import install_plugin

GOOD = '''
from pydantic import Field
from stillroom import ComponentConfig, Loss, hookimpl

class Half(Loss):
    """Half the mean of the student logits (a loss with a recognisable value)."""
    name = "half"
    class Config(ComponentConfig):
        scale: float = Field(0.5, description="multiplier")
    def __call__(self, student_logits, teacher_logits=None, labels=None):
        return student_logits.mean() * self.config.scale

@hookimpl
def stillroom_register_losses(register):
    register(Half)
'''


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """A folder on sys.path holding a real installed distribution with stillroom entry points."""
    site = install_plugin(tmp_path / "site", "fakeplug", "1.2",
                          {"good": "fakeplug_good", "broken": "fakeplug_broken"},
                          {"fakeplug_good": GOOD,
                           "fakeplug_broken": "raise RuntimeError('this plugin is broken on purpose')\n"})
    monkeypatch.syspath_prepend(str(site))
    for name in ("fakeplug_good", "fakeplug_broken"):
        sys.modules.pop(name, None)
    return site


def test_entry_points_load_and_broken_plugin_is_isolated(fake_site, stillroom_env):
    lines = []
    host = make_host(distributions={"fakeplug"}, report=lines.append)
    assert host.plugins["good"].status == "ok" and host.plugins["good"].version == "1.2"
    assert host.plugins["broken"].status == "broken"
    assert lines == ['Error loading plugin "broken" (distribution fakeplug): RuntimeError: this plugin is broken on purpose']
    assert host.component("loss", "half").name == "half"


def test_allow_and_block_lists(fake_site, stillroom_env, monkeypatch):
    monkeypatch.setenv("STILLROOM_PLUGINS", "good")
    host = make_host(distributions={"fakeplug"}, report=lambda line: pytest.fail(line))
    assert host.plugins["broken"].status == "disabled" and "half" in host.components["loss"]
    monkeypatch.delenv("STILLROOM_PLUGINS")
    monkeypatch.setenv("STILLROOM_DISABLE_PLUGINS", "good,broken")
    host = make_host(distributions={"fakeplug"}, report=lambda line: pytest.fail(line))
    assert host.components["loss"] == {} and host.plugins["good"].status == "disabled"


def test_first_party_host_never_autoloads_installed_third_party(fake_site, stillroom_env):
    from stillroom.testing import first_party_host

    host = first_party_host()
    assert "good" not in host.plugins and all(p.distribution == "stillroom" for p in host.plugins.values())


def test_duplicate_kind_names_both_plugins(stillroom_env):
    import types

    from stillroom import ComponentConfig, Loss, hookimpl

    def plugin(label):
        class Dup(Loss):
            """A duplicate."""
            name = "dup"

            def __call__(self, student_logits, teacher_logits=None, labels=None):
                return student_logits.sum()

        Dup.__qualname__ = f"Dup{label}"
        module = types.ModuleType(f"plugin_{label}")
        module.stillroom_register_losses = hookimpl(lambda register: register(Dup))
        return module

    with pytest.raises(UserError) as info:
        make_host(modules={"first": plugin("A"), "second": plugin("B")}, entry_points=False)
    message = str(info.value)
    assert "'dup' is registered twice" in message and "'first'" in message and "'second'" in message
    assert "DupA" in message and "DupB" in message


def test_misspelt_hook_fails_loudly(stillroom_env):
    import types

    from stillroom import hookimpl

    module = types.ModuleType("typo")
    module.stillroom_register_loses = hookimpl(lambda register: None)
    with pytest.raises(UserError, match="unknown hook 'stillroom_register_loses' \\(did you mean 'stillroom_register_losses'\\?\\)"):
        make_host(modules={"typo": module}, entry_points=False)


def test_registering_a_non_component_is_a_clear_error(stillroom_env):
    import types

    from stillroom import hookimpl

    module = types.ModuleType("wrong")
    module.stillroom_register_losses = hookimpl(lambda register: register(dict))
    with pytest.raises(TypeError, match="must subclass stillroom.Loss"):
        make_host(modules={"wrong": module}, entry_points=False)


def test_cli_lists_broken_plugin_and_keeps_working(fake_site, stillroom_env):
    env = {**os.environ, "PYTHONPATH": str(fake_site)}
    out = subprocess.run([sys.executable, "-m", "stillroom.cli", "plugins", "list", "--json"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert isinstance(rows, list)
    assert {"plugin": "good", "role": "loss", "kind": "half", "version": "1.2", "status": "ok"} in rows
    assert any(r["plugin"] == "broken" and r["status"] == "broken" for r in rows)
    assert set(rows[0]) == {"plugin", "role", "kind", "version", "status"}
    assert 'Error loading plugin "broken" (distribution fakeplug)' in out.stderr
    assert "Traceback" not in out.stderr


def test_pytest_plugin_leaves_an_unrelated_project_alone(tmp_path):
    """stillroom.testing loads in every pytest session where stillroom is installed (entry point ``pytest11``):
    a user's own project keeps its environment; only tests asking for ``stillroom_env`` get the offline variables,
    and the ini option opts a whole session in."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_user.py").write_text(textwrap.dedent('''
        import os

        def test_untouched():
            assert "HF_HUB_OFFLINE" not in os.environ and "TOKENIZERS_PARALLELISM" not in os.environ

        def test_fixture_sets_offline(stillroom_env):
            assert os.environ["HF_HUB_OFFLINE"] == "1"

        def test_fixture_undone():
            assert "HF_HUB_OFFLINE" not in os.environ
    '''))
    env = {k: v for k, v in os.environ.items() if k not in
           ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRL_EXPERIMENTAL_SILENCE", "TOKENIZERS_PARALLELISM",
            "STILLROOM_TEST_OFFLINE", "PYTEST_ADDOPTS")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)]
    out = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "3 passed" in out.stdout, out.stdout + out.stderr

    (project / "pytest.ini").write_text("[pytest]\nstillroom_offline = true\n")
    (project / "test_user.py").write_text("import os\n\ndef test_opted_in():\n    assert os.environ['HF_HUB_OFFLINE'] == '1'\n")
    out = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout + out.stderr


def test_tiny_model_command_builds_once_from_a_corpus(tmp_path, capsys):
    from transformers import AutoTokenizer

    from stillroom.testing.__main__ import MARKER, main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("predict: 3 + 4 = 7\nexplain: three plus four is seven\n" * 20)
    folder = tmp_path / "tiny"
    main(["tiny-model", str(folder), "--corpus", str(corpus), "--plain", "--vocab-size", "300", "--hidden", "32"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.chat_template is None
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == 32
    built = (folder / "model.safetensors").stat().st_mtime_ns
    main(["tiny-model", str(folder), "--corpus", str(corpus), "--plain", "--vocab-size", "300", "--hidden", "32"])
    assert (folder / "model.safetensors").stat().st_mtime_ns == built and (folder / MARKER).is_file()
    with pytest.raises(SystemExit, match="hidden \\(30\\) must be a multiple of heads \\(4\\)"):
        main(["tiny-model", str(folder), "--corpus", str(corpus), "--hidden", "30"])
