"""The ``stillroom`` command line. Plugins add commands through ``stillroom_register_commands``.

Errors a user can fix print one line per problem and exit 2; ``STILLROOM_RAISE_ERRORS=1`` re-raises them.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer.core import TyperCommand

from stillroom.roles import UserError, suggest

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Distil large language models into small ones "
                  "and compare the results on a leaderboard.")
spec_app = typer.Typer(no_args_is_help=True, help="Validate run specs and export their JSON Schema.")
plugins_app = typer.Typer(no_args_is_help=True, help="List, inspect and install plugins.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect or clear the call cache.")
app.add_typer(spec_app, name="spec")
app.add_typer(plugins_app, name="plugins")
app.add_typer(cache_app, name="cache")
console = Console(stderr=False)


def _version(value: bool):
    if value:
        typer.echo(f"stillroom {metadata.version('stillroom')}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version")):
    """stillroom: distillation recipes and benchmarks as plugins."""


@app.command()
def run(spec: Path = typer.Argument(..., help="run spec (.toml or .yaml)"),
        resume: bool = typer.Option(False, "--resume", help="continue the newest unfinished run of this spec"),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="train every method entry once per seed, e.g. "
                                            "0,1,2 (replaces the spec's seeds)"),
        jobs: str = typer.Option("1", "--jobs", "-j", help="method x seed entries run at once in separate processes; "
                                 "'auto': one per GPU, else CPU cores / OMP_NUM_THREADS"),
        launcher: str = typer.Option("local", "--launcher", help="where entries run with --jobs: local or slurm"),
        partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition (--launcher slurm)"),
        time_minutes: int = typer.Option(24 * 60, "--time", min=1, help="time limit of each entry's job in minutes"),
        slurm_gpus: Optional[int] = typer.Option(None, "--gpus", min=0, help="GPUs per entry's Slurm job (default: "
                                                 "1 when this machine sees a GPU, else 0)")):
    """Run a spec: every method (at every seed), every evaluator, results to the leaderboard."""
    from stillroom.leaderboard import render_pivot
    from stillroom.runs import LAUNCHERS, LaunchOptions, execute, parse_jobs, parse_seeds, threads_per_job, visible_gpus
    from stillroom.results import ResultsStore

    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}{suggest(launcher, LAUNCHERS)}; use local or slurm", "--launcher")
    if partition is not None and launcher != "slurm":
        raise UserError("a partition is a Slurm option; add --launcher slurm", "--partition")
    if slurm_gpus is not None and launcher != "slurm":
        raise UserError("GPUs per job are a Slurm option (locally every visible GPU is used); add --launcher slurm",
                        "--gpus")
    count = parse_jobs(jobs)
    launch = LaunchOptions(jobs=count, launcher=launcher, partition=partition, time_minutes=time_minutes,
                           threads_per_job=threads_per_job() if count > 1 or launcher != "local" else None,
                           # locally: every visible GPU, one entry on each; on Slurm: GPUs per entry's job
                           gpus=(visible_gpus() if count > 1 else 0) if launcher == "local" else
                           (slurm_gpus if slurm_gpus is not None else min(visible_gpus(), 1)))
    result = execute(spec, resume=resume, console=console, seeds=parse_seeds(seeds), launch=launch)
    console.print(f"run {result.id}: {result.dir.root}")
    render_pivot(ResultsStore.default().rows(run_id=result.id, latest=False), "table", console)
    _print_next_steps(result)


def _print_next_steps(result) -> None:
    """Where the report is and how to see the leaderboard again: the last lines of every finished run."""
    report = result.dir.root / "report.html"
    if report.exists():
        console.print(f"report: {report}", soft_wrap=True, highlight=False)
    console.print(f"leaderboard: stillroom leaderboard --run {result.id}", soft_wrap=True, highlight=False)


class _LeaderboardCommand(TyperCommand):
    """``stillroom leaderboard``, whose ``--format`` help lists the registered output formats. They are looked up
    when the help is shown, not when the command line is built: ``stillroom --help`` collects no plugin."""

    def format_help(self, ctx, formatter):
        from stillroom.plugin_manager import get_host

        notes = {"terminal": " (terminal only)", "file": " (needs -o)", "stdout": ""}
        formats = [f"{name}: {reg.renderer.description}{notes[reg.renderer.destination]}"
                   for name, reg in get_host().renderers.items()]
        for param in self.params:
            if param.name == "fmt":
                param.help = "output format, one of " + "; ".join(formats or ["none registered"])
        super().format_help(ctx, formatter)


@app.command(cls=_LeaderboardCommand)
def leaderboard(fmt: str = typer.Option("table", "--format", "-f", help="output format (a registered renderer)"),
                output: Optional[Path] = typer.Option(None, "-o", "--output", help="write to a file"),
                evaluator: Optional[str] = typer.Option(None, help="only this evaluator"),
                method: Optional[str] = typer.Option(None, help="only this method"),
                run_id: Optional[str] = typer.Option(None, "--run", help="only this run"),
                model: Optional[str] = typer.Option(None, help="only this model"),
                history: bool = typer.Option(False, "--history", help="every result, not just the latest"),
                sort: Optional[str] = typer.Option(None, "--sort", help="sort by this column: a metric (e.g. exact_match) "
                                                   "or budget column (e.g. flops_estimate); with --long e.g. value"),
                descending: Optional[bool] = typer.Option(None, "--desc/--asc", help="sort direction (default: "
                                                          "descending for numbers, ascending for text)"),
                compare: Optional[tuple[str, str]] = typer.Option(None, "--compare", metavar="A B",
                                                                  help="paired significance tests of model A vs B"),
                seed: int = typer.Option(0, "--seed", help="bootstrap seed for --compare"),
                long: Optional[bool] = typer.Option(None, "--long/--pivot", help="--long: one row per model, "
                                                    "evaluator and metric; --pivot: one row per model entry "
                                                    "(default: the format's own: pivot, except json, which stays "
                                                    "long)")):
    """Show the leaderboard (one row per model entry: each metric with its interval and verdict against the
    reference, and the budget consumed), or compare two models with paired tests (--compare A B)."""
    from stillroom.leaderboard import (RenderOptions, check_comparison_format, compare_models, render_comparison,
                                      shaped_rows)
    from stillroom.plugin_manager import get_host
    from stillroom.results import ResultsStore

    # --compare draws pairs of models in its own layouts; the leaderboard's formats are registered renderers
    if compare:
        check_comparison_format(fmt, get_host().renderers)
        renderer, terminal = None, fmt == "table"
    else:
        renderer = get_host().renderer(fmt)
        terminal = renderer.destination == "terminal"
    if renderer and renderer.destination == "file" and output is None:
        raise UserError(f"{fmt} writes a file ({renderer.description}); add -o leaderboard{renderer.extension}",
                        "--format")
    if terminal and output is not None:
        files = [name for name, reg in get_host().renderers.items() if reg.renderer.destination != "terminal"]
        raise UserError(f"{fmt} prints to the terminal; for a file use --format {', '.join(files) or '...'}", "-o")
    with ResultsStore.default() as store:
        if compare:
            text = render_comparison(compare_models(store, *compare, seed=seed), fmt, console)
        else:
            rows = store.rows(latest=not history, evaluator=evaluator, method=method, run_id=run_id, model=model)
            if not rows and terminal:
                console.print(f"no matching results in {store.path}")
                return
            shape = renderer.shape if long is None else "long" if long else "pivot"
            shown = shaped_rows(rows, shape, sort=sort, descending=descending)
            text = renderer.render(shown, RenderOptions(shape=shape, results=rows, console=console))
    if output:
        if isinstance(text, bytes):
            output.write_bytes(text)
        else:
            output.write_text(text)
        console.print(f"wrote {output}")
    elif isinstance(text, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(text)
    elif text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def report(target: str = typer.Argument(..., metavar="RUN_OR_SPEC", help="a run id, a run folder, or a spec "
                                        "(its newest recorded run)"),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="where to write the page (default: "
                                                 "report.html in the run folder)")):
    """Write the HTML report of one run (leaderboard, verdicts, training curves, cost, samples) and print its path."""
    from stillroom.leaderboard import report_page
    from stillroom.plugin_manager import get_host
    from stillroom.results import ResultsStore

    with ResultsStore.default() as store:
        run_id = _run_of(target, store)
        rows = store.rows(run_id=run_id, latest=False)
    run_dir = next((r["run_dir"] for r in rows if r.get("run_dir")), None)
    path = output or (Path(run_dir) / "report.html" if run_dir else None)
    if path is None:
        raise UserError(f"the store does not know run {run_id}'s folder; add -o report.html", "RUN_OR_SPEC")
    name = rows[0]["model"].split("/", 1)[0]
    page = report_page(get_host(), rows, title=f"{name} {run_id}")
    if page is None:
        raise UserError("no output format named html is registered (is the formats plugin disabled?)", "report")
    path.write_bytes(page)
    sys.stdout.write(f"{path}\n")


def _run_of(target: str, store) -> str:
    """The run id ``stillroom report`` means: a run folder's (its manifest), a spec's newest run in the store (by
    the spec's name), or ``target`` itself when the store has results of that run."""
    path = Path(target)
    if path.is_dir():
        manifest = path / "manifest.json"
        if not manifest.is_file():
            raise UserError("not a run folder (no manifest.json)", target)
        run_id = json.loads(manifest.read_text())["run_id"]
    elif path.is_file():
        from stillroom.specs import load_spec

        name = load_spec(path).name
        created = {r["run_id"]: r["created"] for r in store.rows(latest=False) if r["model"].startswith(f"{name}/")}
        if not created:
            raise UserError(f"no results of a run named {name!r} in {store.path}; run `stillroom run {target}` first",
                            target)
        run_id = max(created, key=created.get)
    else:
        run_id = target
    if not store.rows(run_id=run_id, latest=False):
        runs = sorted({r["run_id"] for r in store.rows(latest=False)})
        raise UserError(f"no results of run {run_id!r} in {store.path}{suggest(run_id, runs)}; give a run id, a run "
                        "folder or a spec", target)
    return run_id


def _option_values(options: list[str]) -> dict:
    values = {}
    for item in options:
        if "=" not in item:
            raise UserError("expected KEY=VALUE", f"--option {item}")
        key, raw = item.split("=", 1)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise UserError("no such file", str(path))
    return path.read_text(encoding="utf-8").splitlines()


@app.command("eval")
def evaluate(evaluator: str = typer.Option(..., "--evaluator", "-e", help="evaluator kind (bbh, mmlu, rouge, ...)"),
             model: Optional[str] = typer.Option(None, "--model", "-m", help="local model path / hub id, or an "
                                                 "OpenAI-compatible base URL (http://...)"),
             served_model: str = typer.Option("default", "--served-model", help="model name at an API endpoint"),
             variant: Optional[str] = typer.Option(None, help="evaluator variant (e.g. lion)"),
             limit: Optional[int] = typer.Option(None, help="examples per task"),
             num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", help="few-shot examples"),
             option: list[str] = typer.Option([], "--option", "-o", help="other evaluator option KEY=VALUE (JSON values)"),
             predictions: Optional[Path] = typer.Option(None, help="score a file of predictions (one per line)"),
             references: Optional[Path] = typer.Option(None, help="references for --predictions (one per line)"),
             output_dir: Path = typer.Option(Path("runs"), "--output-dir", help="where the eval run directory goes"),
             fmt: str = typer.Option("table", "--format", "-f", help="table or json")):
    """Evaluate one model (or a predictions file) without a full run; results go to the leaderboard."""
    from stillroom.roles import Context
    from stillroom.leaderboard import render
    from stillroom.plugin_manager import build, get_host
    from stillroom.results import EvalRun, Evaluation, Lineage, evaluate_subject, record_run
    from stillroom.rundir import RunDirectory, new_run_id, run_containing
    from stillroom.runs import plugin_version
    from stillroom.results import ResultsStore

    if fmt not in ("table", "json"):
        raise UserError(f"unknown format {fmt!r}; use table or json", "--format")
    config = {k: v for k, v in {"variant": variant, "limit": limit, "num_fewshot": num_fewshot}.items() if v is not None}
    config.update(_option_values(option))
    if predictions is not None or references is not None:
        if predictions is None or references is None:
            raise UserError("give both --predictions and --references", "eval")
        texts, refs = _read_lines(predictions), _read_lines(references)
        if len(texts) != len(refs):
            raise UserError(f"{len(texts)} predictions but {len(refs)} references", str(predictions))
    elif model is None:
        raise UserError("give --model (or --predictions and --references)", "eval")
    run_id = new_run_id()
    run_dir = RunDirectory(output_dir.resolve() / "eval" / run_id)
    context = Context(run_dir=run_dir.root)
    scorer = build("evaluator", evaluator, context=context, **config)
    version = plugin_version(get_host(), "evaluator", scorer.name)
    if predictions is not None:
        from stillroom.roles import TextScorer

        if not isinstance(scorer, TextScorer):
            raise UserError(f"evaluator {evaluator!r} cannot score files; give it a --model", "--predictions")
        scored = scorer.score_texts(texts, refs)
        evaluation = Evaluation.of(predictions.name, evaluator, scorer.name, scored.metrics, version=version)
        lineage = Lineage("predictions")
    else:
        if model.startswith(("http://", "https://")):
            from stillroom.paths import safe_name

            component = build("endpoint", "openai", context=context, base_url=model, model=served_model)
            # one folder name, not a nested path: "tiny@http://host:8000/v1" -> "tiny-http-host-8000-v1-<digest>"
            subject_name = safe_name(f"{served_model}@{re.sub(r'//[^/@]*@', '//', model)}")  # no user:key in it
        else:
            component = build("student", "hf", context=context, model=model)
            from stillroom.paths import safe_name

            subject_name = safe_name(Path(model).name or model)
        evaluation = evaluate_subject(run_dir, subject_name, component, evaluator, scorer, "model", version=version)
        # a model a run trained keeps that run as its parent on the leaderboard
        lineage = Lineage("model", path=model, parent_run=run_containing(model) if Path(model).exists() else None)
    with ResultsStore.default() as store:
        rows = record_run(store, EvalRun(run_id, run_dir), [evaluation], {evaluation.subject: lineage})
    text = render(rows, fmt, console)
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@spec_app.command("validate")
def spec_validate(spec: Path = typer.Argument(..., help="run spec to check")):
    """Check a spec; exit 0 when valid, else print one `location: message` line per problem and exit 2."""
    from stillroom.specs import load_spec

    load_spec(spec)
    console.print(f"{spec}: ok")


@spec_app.command("schema")
def spec_schema():
    """Print the JSON Schema of a run spec, third-party plugin configs included."""
    from stillroom.specs import spec_model

    sys.stdout.write(json.dumps(spec_model().model_json_schema(), indent=2) + "\n")


def _registration_tables(host) -> list[tuple[str, dict]]:
    """What plugins registered, as (role, kind -> registration) tables: the components, then the output formats
    (listed under the role ``renderer``)."""
    return [*host.components.items(), ("renderer", host.renderers)]


@plugins_app.command("list")
def plugins_list(as_json: bool = typer.Option(False, "--json", help="a JSON array, one object per component"),
                 available: bool = typer.Option(False, "--available", help="also list installable plugins from the registry")):
    """List loaded plugins and the components they provide."""
    from stillroom.plugin_manager import get_host
    from stillroom.registry import load_registry

    host = get_host()
    entries = []
    for role, table in _registration_tables(host):
        for kind, reg in sorted(table.items()):
            info = host.plugins.get(reg.plugin)
            entries.append({"plugin": reg.plugin, "role": role, "kind": kind,
                            "version": info.version if info else None, "status": info.status if info else "ok"})
    registry = load_registry()
    for name, info in host.plugins.items():
        if info.status != "ok":
            known = registry.plugins.get(name)
            for component in (known.components if known else []) or [None]:
                entries.append({"plugin": name, "role": component.role if component else None,
                                "kind": component.kind if component else None, "version": info.version,
                                "status": info.status})
    if available:
        for name, known in registry.plugins.items():
            if name not in host.plugins:
                for component in known.components:
                    entries.append({"plugin": name, "role": component.role, "kind": component.kind,
                                    "version": None, "status": "available"})
    if as_json:  # one JSON array, so `json.load` (or jq) reads the whole listing at once
        sys.stdout.write(json.dumps(entries, indent=1) + "\n")
        return
    from rich.table import Table

    table = Table("plugin", "role", "kind", "version", "status")
    for entry in entries:
        table.add_row(*(str(entry[k] or "") for k in ("plugin", "role", "kind", "version", "status")))
    console.print(table)


@plugins_app.command("info")
def plugins_info(name: str):
    """Show what a plugin provides, where it comes from, and whether it loaded."""
    from stillroom.plugin_manager import get_host
    from stillroom.registry import load_registry

    host, registry = get_host(), load_registry()
    if name not in host.plugins and name not in registry.plugins:
        raise UserError(f"unknown plugin{suggest(name, [*host.plugins, *registry.plugins])}", name)
    info = host.plugins.get(name)
    known = registry.plugins.get(name)
    out = {"name": name, "status": info.status if info else "not installed",
           "distribution": info.distribution if info else None, "version": info.version if info else None,
           "error": info.error if info else None,
           "components": [{"role": r, "kind": k} for r, t in _registration_tables(host) for k, g in t.items()
                          if g.plugin == name]
           or ([c.model_dump() for c in known.components] if known else [])}
    if known:
        out.update(summary=known.summary, pip=known.pip, homepage=known.homepage, builtin=known.builtin)
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


@plugins_app.command("install")
def plugins_install(name: str = typer.Argument(..., help="plugin name from registry.toml"),
                    pip: Optional[str] = typer.Option(None, "--pip", help="install this requirement for an unknown name"),
                    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation")):
    """Install a plugin with pip into this interpreter, resolving its name through the registry."""
    from stillroom.registry import load_registry

    known = load_registry().plugins.get(name)
    if known is None and pip is None:
        raise UserError(f"unknown plugin{suggest(name, load_registry().plugins)}; pass --pip REQUIREMENT to install "
                        "an unlisted one", name)
    if known is not None and known.builtin:
        console.print(f"{name} is built in; nothing to install")
        return
    requirement = pip or known.pip
    command = [sys.executable, "-m", "pip", "install", requirement]
    console.print(f"will run: {' '.join(command)}")
    if not yes and sys.stdin.isatty() and not typer.confirm("proceed?"):
        raise typer.Exit(1)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise UserError(f"pip failed with exit code {done.returncode}", name)


@cache_app.command("stats")
def cache_stats():
    """Entries and size of the call cache."""
    from stillroom.roles import Context

    sys.stdout.write(json.dumps(Context().cache.stats(), indent=2) + "\n")


@cache_app.command("clear")
def cache_clear(yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation")):
    """Delete every cached call."""
    from stillroom.roles import Context

    cache = Context().cache
    if not yes:
        if not sys.stdin.isatty():  # a script or a pipe cannot answer: deleting paid-for answers needs --yes
            raise UserError("asks for confirmation and stdin is not a terminal; add --yes to delete every cached "
                            "call", "cache clear")
        if not typer.confirm(f"delete every cached call in {cache.path}?"):
            raise typer.Exit(1)
    console.print(f"removed {cache.clear()} cached calls")


SHELLS = ("bash", "zsh", "fish")


@app.command("completion")
def completion(shell: str = typer.Argument(..., help="bash, zsh or fish")):
    """Print the shell completion script, e.g. `eval "$(stillroom completion bash)"` in ~/.bashrc."""
    # typer writes the script; the shell then calls `stillroom` with _STILLROOM_COMPLETE set, which main() answers
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        raise UserError(f"unknown shell {shell!r}{suggest(shell, SHELLS)}; use one of {', '.join(SHELLS)}", "completion")
    script = get_completion_script(prog_name="stillroom", complete_var="_STILLROOM_COMPLETE", shell=shell)
    sys.stdout.write(script if script.endswith("\n") else script + "\n")


def _add_plugin_commands() -> None:
    from stillroom.plugin_manager import get_host

    get_host().pm.hook.stillroom_register_commands(cli=app)


def main(argv: list[str] | None = None) -> None:
    raise_errors = bool(os.environ.get("STILLROOM_RAISE_ERRORS"))
    try:
        _add_plugin_commands()
        if os.environ.get("_STILLROOM_COMPLETE"):  # a shell asking for completions (see `stillroom completion`)
            from typer.completion import completion_init

            completion_init()
        code = app(args=argv, standalone_mode=False, prog_name="stillroom")
        # Without standalone mode typer returns exit codes (130 for Ctrl-C, typer.Exit(n)) instead of exiting.
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        if raise_errors:
            raise
        lines = exc.lines
        for line in lines:
            print(_one_line(line), file=sys.stderr)
        sys.exit(2)
    except (OSError, UnicodeError, OverflowError, sqlite3.DatabaseError) as exc:
        # The error boundary: what the machine or a file handed us (a folder where a file belongs, bytes that are
        # not UTF-8, a damaged database, a number too big) is the user's to fix, so one located line, exit 2.
        if raise_errors:
            raise
        print(_one_line(_boundary_line(exc)), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finished stages are kept, continue with --resume", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        errors = _click_errors()
        if isinstance(exc, errors["help"]):
            exc.show()  # a group called without a command: its help
            sys.exit(2)
        if isinstance(exc, errors["usage"]) and not raise_errors:
            # an unknown command or option, a missing argument: one line that names the command
            command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "stillroom"
            print(f"{command}: {exc.format_message()} (see {command} --help)", file=sys.stderr)
            sys.exit(2)
        if isinstance(exc, errors["click"]):
            exc.show()
            sys.exit(2)
        if isinstance(exc, errors["abort"]):
            sys.exit(1)
        raise


MESSAGE_LIMIT = 500  # characters of one error line; a 500 kB value in a message must not flood the terminal


def _one_line(text: str) -> str:
    from stillroom.paths import shorten

    return shorten(" ".join(str(text).split("\n")), MESSAGE_LIMIT)


def _boundary_line(exc: BaseException) -> str:
    """``location: message`` for an error caught at the boundary."""
    import errno

    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else _file_in_traceback(exc)
        where = str(where) if where is not None else "input/output"
        if exc.filename2 is not None:
            where += f" -> {exc.filename2}"
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return f"{where}: {reason}; finished stages are kept, free space and continue with --resume"
        hints = {errno.EISDIR: "a folder where a file is expected", errno.ENOTDIR: "a file where a folder is expected",
                 errno.ENAMETOOLONG: "the name is too long for the file system"}
        return f"{where}: {reason}" + (f" ({hints[exc.errno]})" if exc.errno in hints else "")
    if isinstance(exc, UnicodeDecodeError):
        where = _file_in_traceback(exc) or "input"
        bad = exc.object[exc.start:exc.start + 1].hex() if isinstance(exc.object, (bytes, bytearray)) else "?"
        return f"{where}: not UTF-8 text (byte 0x{bad} at offset {exc.start}); save the file as UTF-8"
    if isinstance(exc, sqlite3.DatabaseError):
        where = _file_in_traceback(exc, suffixes=(".sqlite", ".db")) or "database"
        return f"{where}: {exc} (the SQLite file may be damaged or not a database; move it away to start anew)"
    if isinstance(exc, OverflowError):
        return f"{_file_in_traceback(exc) or 'input'}: a value is too large: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _file_in_traceback(exc: BaseException, suffixes: tuple[str, ...] = ()) -> str | None:
    """The file an error happened in, found among the innermost frames' open files and paths (an error from
    ``Path.read_text`` or a reader loop knows no file name itself)."""
    import io

    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in list(frame.f_locals.values()):
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                name = value.name
            elif isinstance(value, Path) and (value.suffix or value.exists()):
                name = str(value)
            else:
                continue
            if not suffixes or name.endswith(suffixes):
                return name
        for value in list(frame.f_locals.values()):  # ResultsStore / CallCache keep theirs in .path
            path = getattr(value, "path", None)
            if suffixes and isinstance(path, Path) and str(path).endswith(suffixes):
                return str(path)
    return None


def _click_errors() -> dict[str, tuple[type, ...]]:
    """click's exception classes, and typer's vendored copies of them (typer >= 0.20 ships its own click, whose
    errors are not subclasses of click's)."""
    import click

    found = {"click": [click.ClickException], "usage": [click.UsageError], "abort": [click.exceptions.Abort],
             "help": [getattr(click.exceptions, "NoArgsIsHelpError", ())]}
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        vendored = None
    if vendored is not None:
        for key, name in (("click", "ClickException"), ("usage", "UsageError"), ("help", "NoArgsIsHelpError")):
            if hasattr(vendored, name):
                found[key].append(getattr(vendored, name))
    import typer

    found["abort"].append(typer.Abort)
    return {key: tuple(c for c in classes if isinstance(c, type)) for key, classes in found.items()}


if __name__ == "__main__":
    main()
