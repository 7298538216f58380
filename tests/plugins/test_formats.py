"""The leaderboard's output formats are registered renderers: the built-in ones are the ``formats`` plugin's
``trylast`` defaults, a third-party plugin adds a format or replaces one, and ``stillroom leaderboard --format``
takes its choices, its help and its errors from the registry."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import types
from unittest.mock import patch

import pytest
from rich.console import Console
from typer.testing import CliRunner

import stillroom.cli
from stillroom import hookimpl
from stillroom.cli import app
from stillroom.leaderboard import OutputRenderer, RenderOptions, metric_keys, render, render_pivot
from stillroom.plugin_manager import make_host, use_host
from stillroom.plugins import formats
from stillroom.plugins.formats.report import html_report
from stillroom.results import ResultsStore
from stillroom.roles import UserError
from stillroom.testing import install_plugin

SCORES = {"teacher": 0.9, "base": 0.3, "sft": 0.55, "gkd": 0.7}


def populate(store: ResultsStore, folder) -> None:
    """One run: teacher, base and two methods on two metrics, each with a count and an interval; the exact-match
    results keep their per-item records (what ``--compare`` reads)."""
    store.add_run("r1", "demo", spec_hash="h1")
    for name, score in SCORES.items():
        role = name if name in ("teacher", "base") else "method"
        model_id = store.add_model("r1", f"demo/{name}", role, method=name if role == "method" else None,
                                   wall_seconds=12.0, teacher_calls=40)
        samples = folder / f"{name}-em.jsonl"
        samples.write_text("".join(json.dumps({"id": i, "correct": i < score * 50}) + "\n" for i in range(50)))
        store.add_result("r1", model_id, "em", "accuracy", score, n=50, ci_low=score - 0.1, ci_high=score + 0.1,
                         samples_path=str(samples))
        store.add_result("r1", model_id, "judge", "score", score / 2, n=20, stderr=0.01)


@pytest.fixture
def board(stillroom_env):
    with ResultsStore.default() as store:
        populate(store, stillroom_env)
        yield store


def tsv(rows, options: RenderOptions) -> str:
    """Tab-separated pivot entries (model, then each metric's value), or long rows (model, metric, value)."""
    if options.shape == "long":
        return "".join(f"{r['model']}\t{r['evaluator']}/{r['metric']}\t{r['value']}\n" for r in rows)
    keys = metric_keys(rows)
    lines = ["\t".join(["model", *keys])]
    lines += ["\t".join([e["model"], *(str(e["metrics"][k]["value"]) for k in keys)]) for e in rows]
    return "\n".join(lines) + "\n"


def renderer_plugin(name: str, *renderers: OutputRenderer, **marks) -> types.ModuleType:
    """A one-hook plugin module registering ``renderers``."""
    module = types.ModuleType(name)

    def stillroom_register_output_renderers(register):
        for renderer in renderers:
            register(renderer)

    module.stillroom_register_output_renderers = hookimpl(**marks)(stillroom_register_output_renderers)
    return module


@pytest.fixture
def host_with(stillroom_env):
    """``host_with(**modules)``: a fresh host of the formats plugin plus ``modules``, made the process-wide one."""
    previous = []

    def make(**modules):
        host = make_host(modules={"formats": formats, **modules}, entry_points=False)
        previous.append(use_host(host))
        return host

    yield make
    if previous:
        use_host(previous[0])


def leaderboard(*args: str) -> str:
    """``stillroom leaderboard ARGS`` in this process; a user error is raised as it is."""
    with patch.object(stillroom.cli, "console", Console(width=250)):
        result = CliRunner().invoke(app, ["leaderboard", *args])
    if isinstance(result.exception, UserError):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_the_builtin_formats_are_trylast_defaults_of_the_formats_plugin(host_with):
    host = host_with()
    assert list(host.renderers) == ["table", "md", "csv", "json", "html"]
    assert {(reg.plugin, reg.default) for reg in host.renderers.values()} == {("formats", True)}
    destinations = {name: (reg.renderer.destination, reg.renderer.extension) for name, reg in host.renderers.items()}
    assert destinations["table"] == ("terminal", "") and destinations["html"] == ("file", ".html")
    assert destinations["csv"] == ("stdout", ".csv")
    assert host.renderer("json").shape == "long" and host.renderer("md").shape == "pivot"


@pytest.mark.parametrize("fmt", ["md", "csv", "json"])
@pytest.mark.parametrize("shape", ["--pivot", "--long"])
def test_the_builtin_formats_print_what_the_leaderboard_module_draws(board, host_with, fmt, shape):
    host_with()
    rows, draw = board.rows(), render if shape == "--long" else render_pivot
    column = "value" if shape == "--long" else "em/accuracy"
    assert leaderboard("-f", fmt, shape) == draw(rows, fmt)
    assert leaderboard("-f", fmt, shape, "--sort", column, "--asc") == draw(rows, fmt, sort=column, descending=False)


def test_the_builtin_table_and_html(board, host_with, stillroom_env):
    host_with()
    table = leaderboard()
    assert "gkd" in table and "vs ref" in table and "accuracy" in table
    leaderboard("-f", "html", "-o", str(stillroom_env / "board.html"))
    page = (stillroom_env / "board.html").read_text()
    assert page == html_report(board.rows())
    with pytest.raises(UserError, match="add -o leaderboard.html"):
        leaderboard("-f", "html")
    with pytest.raises(UserError, match="table prints to the terminal; for a file use --format md, csv, json, html"):
        leaderboard("-o", str(stillroom_env / "board.txt"))


def test_a_plugin_adds_a_format_that_renders_both_shapes_and_writes_files(board, host_with, stillroom_env):
    host = host_with(mine=renderer_plugin("mine", OutputRenderer("tsv", "tab-separated values", tsv, extension=".tsv")))
    assert host.renderers["tsv"].plugin == "mine" and not host.renderers["tsv"].default
    lines = [line.split("\t") for line in leaderboard("-f", "tsv").splitlines()]
    assert lines[0] == ["model", "em/accuracy", "judge/score"]
    # pivot entries in the leaderboard's order: teacher, base, then methods best first
    assert [(line[0], float(line[1])) for line in lines[1:]] == \
        [("demo/teacher", 0.9), ("demo/base", 0.3), ("demo/gkd", 0.7), ("demo/sft", 0.55)]
    long = [line.split("\t") for line in leaderboard("-f", "tsv", "--long", "--sort", "value", "--asc").splitlines()]
    assert len(long) == 8 and [float(line[2]) for line in long] == sorted(float(line[2]) for line in long)
    leaderboard("-f", "tsv", "-o", str(stillroom_env / "board.tsv"))
    assert (stillroom_env / "board.tsv").read_text().splitlines()[0] == "model\tem/accuracy\tjudge/score"


def test_a_plugin_replaces_a_builtin_format_whatever_the_load_order(board, stillroom_env):
    def upper_md(rows, options):
        return "PLUGIN MD " + " ".join(e["model"] for e in rows) + "\n"

    mine = renderer_plugin("mine", OutputRenderer("md", "markdown, shouted", upper_md, extension=".md"))
    for modules in ({"formats": formats, "mine": mine}, {"mine": mine, "formats": formats}):
        host = make_host(modules=modules, entry_points=False)
        assert host.renderers["md"].plugin == "mine" and host.renderer("md").description == "markdown, shouted"
        assert host.renderers["csv"].plugin == "formats"  # the default's other formats stay
        previous = use_host(host)
        try:
            assert leaderboard("-f", "md") == "PLUGIN MD demo/teacher demo/base demo/gkd demo/sft\n"
            assert list(csv.DictReader(io.StringIO(leaderboard("-f", "csv"))))[0]["model"] == "demo/teacher"
        finally:
            use_host(previous)


def test_two_plugins_registering_one_format_is_an_error_naming_both(stillroom_env):
    first = renderer_plugin("first", OutputRenderer("tsv", "tabs", tsv))
    second = renderer_plugin("second", OutputRenderer("tsv", "more tabs", tsv))
    host = make_host(modules={"first": first, "second": second}, entry_points=False)
    with pytest.raises(UserError, match="format 'tsv' is registered twice: by plugin 'second' .* by plugin 'first'"):
        host.renderers  # noqa: B018


def test_what_is_registered_must_be_an_output_renderer(stillroom_env):
    host = make_host(modules={"bad": renderer_plugin("bad", {"name": "tsv", "render": tsv})}, entry_points=False)
    with pytest.raises(TypeError, match="plugin 'bad' registered .* must be a stillroom.leaderboard.OutputRenderer"):
        host.renderers  # noqa: B018
    with pytest.raises(ValueError, match="destination 'disk' is not one of terminal, stdout, file"):
        OutputRenderer("tsv", "tabs", tsv, destination="disk")
    with pytest.raises(ValueError, match="one line"):
        OutputRenderer("tsv", "tabs\nand more", tsv)


def test_unknown_format_lists_the_registered_ones(board, host_with):
    host_with(mine=renderer_plugin("mine", OutputRenderer("tsv", "tab-separated values", tsv)))
    with pytest.raises(UserError, match=r"unknown format 'tvs' \(did you mean 'tsv'\?\); use one of table, md, csv, "
                                        r"json, html, tsv") as caught:
        leaderboard("-f", "tvs")
    assert caught.value.location == "--format"
    # --compare draws pairs of models in its own layouts, not through the renderers
    with pytest.raises(UserError, match="--compare renders as table, md, csv or json"):
        leaderboard("--compare", "demo/gkd", "demo/base", "-f", "tsv")
    # a registered format is not called unknown; one that nobody registered is
    for fmt, message in (("html", "--format: --compare renders"), ("tvs", "--format: unknown format 'tvs'")):
        with pytest.raises(UserError) as caught:
            leaderboard("--compare", "demo/gkd", "demo/base", "-f", fmt)
        assert str(caught.value).startswith(message)
    assert json.loads(leaderboard("--compare", "demo/gkd", "demo/base", "-f", "json"))[0]["evaluator"] == "em"


def test_without_the_formats_plugin_no_format_is_known(board, stillroom_env):
    previous = use_host(make_host(modules={}, entry_points=False))
    try:
        with pytest.raises(UserError, match="unknown format 'md'; use one of none"):
            leaderboard("-f", "md")
    finally:
        use_host(previous)


def test_bytes_go_to_the_file_as_they_are(board, host_with, stillroom_env):
    def packed(rows, options):
        return b"\x00SR" + len(rows).to_bytes(2, "big")

    host_with(mine=renderer_plugin("mine", OutputRenderer("packed", "a binary summary", packed, destination="file",
                                                          extension=".bin")))
    with pytest.raises(UserError, match="packed writes a file \\(a binary summary\\); add -o leaderboard.bin"):
        leaderboard("-f", "packed")
    leaderboard("-f", "packed", "-o", str(stillroom_env / "board.bin"))
    assert (stillroom_env / "board.bin").read_bytes() == b"\x00SR\x00\x04"  # four model entries


INSTALLED = '''
from stillroom import hookimpl
from stillroom.leaderboard import OutputRenderer, metric_keys


def tsv(rows, options):
    keys = metric_keys(rows)
    return "\\n".join("\\t".join([e["model"], *(f"{e['metrics'][k]['value']:.2f}" for k in keys)]) for e in rows)


@hookimpl
def stillroom_register_output_renderers(register):
    register(OutputRenderer("tsv", "tab-separated values, one line per model entry", tsv, extension=".tsv"))
'''


def test_an_installed_plugin_format_appears_in_help_and_renders(board, stillroom_env, tmp_path):
    """The author's path: a distribution with a ``stillroom`` entry point, then the real command line."""
    site = install_plugin(tmp_path / "site", "stillroom-tsv", "0.3", {"tsv": "stillroom_tsv"},
                          {"stillroom_tsv": INSTALLED})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}

    def stillroom(*args):
        return subprocess.run([sys.executable, "-m", "stillroom.cli", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    helped = stillroom("leaderboard", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "tsv: tab-separated values, one line per model entry" in " ".join(helped.stdout.split())
    assert "html: the self-contained HTML report (needs -o)" in " ".join(helped.stdout.split())
    shown = stillroom("leaderboard", "-f", "tsv")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["demo/teacher\t0.90\t0.45", "demo/base\t0.30\t0.15", "demo/gkd\t0.70\t0.35",
                                         "demo/sft\t0.55\t0.28"]
    wrong = stillroom("leaderboard", "-f", "tvs")
    assert wrong.returncode == 2 and wrong.stderr.strip() == \
        "--format: unknown format 'tvs' (did you mean 'tsv'?); use one of table, md, csv, json, html, tsv"
