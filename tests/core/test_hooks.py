"""Registration goes through pluggy: ordering, trylast defaults, attribution, tracing and typed hookspecs."""

import inspect
import types

import pytest

from stillroom import ComponentConfig, Loss, hookimpl, hookspecs
from stillroom.roles import UserError
from stillroom.plugin_manager import make_host


def loss_class(kind: str, label: str) -> type[Loss]:
    class Custom(Loss):
        """A loss that sums the student logits."""

        name = kind

        class Config(ComponentConfig):
            pass

        def __call__(self, student_logits, teacher_logits=None, labels=None):
            return student_logits.sum()

    Custom.__qualname__ = label
    return Custom


def plugin(name: str, *classes: type, calls: list | None = None, **marks) -> types.ModuleType:
    """A one-hook plugin module registering ``classes`` (recording its call in ``calls``)."""
    module = types.ModuleType(name)

    def stillroom_register_losses(register):
        if calls is not None:
            calls.append(name)
        for cls in classes:
            register(cls)

    module.stillroom_register_losses = hookimpl(**marks)(stillroom_register_losses)
    return module


@pytest.mark.parametrize("default_first", [True, False])
def test_a_trylast_default_is_overridden_by_a_plugin_registering_the_same_kind(stillroom_env, default_first):
    from stillroom.plugins import losses

    mine = loss_class("gjsd", "MyJSD")
    modules = {"losses": losses, "mine": plugin("mine", mine)}
    if not default_first:
        modules = dict(reversed(modules.items()))
    host = make_host(modules=modules, entry_points=False)
    assert host.component("loss", "gjsd") is mine
    assert host.components["loss"]["gjsd"].plugin == "mine"
    # the default's other kinds are still there and attributed to it
    assert host.components["loss"]["forward_kl"].plugin == "losses"
    assert host.components["loss"]["forward_kl"].default is True


def test_two_trylast_defaults_of_one_kind_are_still_an_error(stillroom_env):
    first = plugin("first", loss_class("dup", "DupA"), trylast=True)
    second = plugin("second", loss_class("dup", "DupB"), trylast=True)
    with pytest.raises(UserError, match="'dup' is registered twice.*DupA|'dup' is registered twice.*DupB"):
        make_host(modules={"first": first, "second": second}, entry_points=False)


def test_plugins_are_called_in_pluggy_order(stillroom_env):
    calls: list[str] = []
    modules = {name: plugin(name, calls=calls, **marks) for name, marks in
               [("early", {"tryfirst": True}), ("default", {"trylast": True}), ("a", {}), ("b", {})]}
    make_host(modules=modules, entry_points=False)
    # tryfirst, then later-registered before earlier (pluggy's LIFO), then trylast
    assert calls == ["early", "b", "a", "default"]


def test_listing_order_follows_plugin_load_order(stillroom_env):
    host = make_host(modules={"a": plugin("a", loss_class("one", "One")), "b": plugin("b", loss_class("two", "Two"))},
                     entry_points=False)
    assert list(host.components["loss"]) == ["one", "two"]


def test_trace_prints_each_hook_call(stillroom_env, monkeypatch, capsys):
    monkeypatch.setenv("STILLROOM_TRACE_PLUGINS", "1")
    host = make_host(modules={"a": plugin("a", loss_class("one", "One")),
                              "d": plugin("d", loss_class("two", "Two"), trylast=True)}, entry_points=False)
    host.pm.hook.stillroom_run_finished(run=None, results=[])
    lines = capsys.readouterr().err.splitlines()
    assert "stillroom hook stillroom_register_losses(register) -> a" in lines
    assert "stillroom hook stillroom_register_losses(register) -> d (trylast)" in lines
    assert "stillroom hook stillroom_run_finished(run, results) -> no plugin" in lines
    monkeypatch.delenv("STILLROOM_TRACE_PLUGINS")
    make_host(modules={"a": plugin("a", loss_class("one", "One"))}, entry_points=False)
    assert capsys.readouterr().err == ""


def test_output_renderers_are_collected_through_pluggy_when_first_needed(stillroom_env, monkeypatch, capsys):
    from stillroom.plugins import formats

    monkeypatch.setenv("STILLROOM_TRACE_PLUGINS", "1")
    host = make_host(modules={"formats": formats, "a": plugin("a", loss_class("one", "One"))}, entry_points=False)
    assert "stillroom_register_output_renderers" not in capsys.readouterr().err  # not while the host is built
    assert list(host.renderers) == ["table", "md", "csv", "json", "html"]
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["stillroom hook stillroom_register_output_renderers(register) -> formats (trylast)"]
    host.renderers  # noqa: B018 -- collected once
    assert capsys.readouterr().err == ""


def test_every_hookspec_is_typed():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("stillroom_"):
            signature = inspect.signature(fn)
            assert signature.return_annotation == "None", name
            for parameter in signature.parameters.values():
                assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name})"
