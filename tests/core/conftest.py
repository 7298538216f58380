"""Fixtures for core tests; the one-file toy plugin they use lives in toy_components.py."""

import pytest

from toy_components import CALLS, CRASH, TOY_SPEC, toy

@pytest.fixture
def toy_host(stillroom_env):
    from stillroom.plugin_manager import make_host, use_host

    from stillroom.plugins import formats

    # the toy plugin and the default output formats (every finished run writes its HTML report through them)
    host = make_host(modules={"toy": toy, "formats": formats}, entry_points=False)
    previous = use_host(host)
    CALLS.update(teacher=0, train=0)
    CRASH["after_teacher"] = False
    yield host
    use_host(previous)


@pytest.fixture
def toy_spec(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(TOY_SPEC)
    return path
