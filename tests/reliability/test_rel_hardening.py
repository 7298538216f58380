"""Hardening (issue 22) through the real CLI: names that cannot escape the run folder, reserved and duplicate
rows, nested references, folders checked before any work, the one error boundary (files that are not UTF-8,
folders where files belong, names too long, damaged SQLite files, values too large), null fields in data, and
what users see (`cache clear` without a terminal, shell completion, the report path at the end of `run`).

Every bad-input case ends with exit code 2, exactly one meaningful stderr line naming the place, no traceback,
nothing half-written outside the run folder, and, for `run`, no run folder at all: a spec that fails its
checks leaves nothing behind. The cases run four at a time (module fixture `outcomes`).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from relkit import PYTHON, cli_env, closed_port, half_written, meaningful_lines, rel_root, stillroom  # noqa: F401 (fixture)
from test_rel_bad_input import RECORDS, Case, Ctx, _prompts, _set, _with_teacher, run_cases

LONG = "x" * 300


def _data(name: str, text: str | bytes):
    """A spec whose data file is ``name`` holding ``text``."""
    def build(ctx: Ctx) -> list[str]:
        path = ctx.root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", ctx.edit(_set("data.path", str(path)))]
    return build


def _lines(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _methods(*entries):
    return lambda c: ["run", c.edit(_set("methods", list(entries)))]


def _evaluators(*entries):
    return lambda c: ["run", c.edit(_set("evaluators", list(entries)))]


def _lion(referee_endpoint: str, generator_endpoint: str, command: str = "run"):
    def build(ctx: Ctx) -> list[str]:
        def change(spec: dict):
            url = f"http://127.0.0.1:{closed_port()}/v1"
            spec["endpoints"] = {"t": {"kind": "openai", "base_url": url, "model": "m"}}
            spec["teacher"] = {"kind": "api", "endpoint": "t"}
            spec["methods"] = [{"kind": "lion", "referee": {"kind": "llm", "endpoint": referee_endpoint},
                                "instruction_generator": {"kind": "lion_llm", "endpoint": generator_endpoint}}]
        return ([command] if command == "run" else ["spec", "validate"]) + [ctx.edit(change)]
    return build


def _env(**variables):
    """A spec run with environment variables pointing at paths under the case root (``{root}`` is replaced)."""
    def build(ctx: Ctx) -> list[str]:
        for key, value in variables.items():
            ctx.env_extra[key] = value.replace("{root}", str(ctx.root))
        (ctx.root / "a-file").write_text("not a folder\n")
        return ["run", ctx.spec()]
    return build


def _damaged_sqlite(path: Path) -> None:
    """A real store with its pages overwritten in the middle (the header stays valid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [("row %d " % i * 20,) for i in range(2000)])
    db.commit()
    db.close()
    with path.open("r+b") as f:
        f.seek(8192)
        f.write(b"\xde\xad\xbe\xef" * 2048)


def _damaged_store(command: str):
    def build(ctx: Ctx) -> list[str]:
        home = ctx.root / "damaged-home"  # outside root/home: half_written() checks that folder's files
        _damaged_sqlite(home / "leaderboard.sqlite")
        ctx.env_extra["STILLROOM_HOME"] = str(home)
        return ["run", ctx.spec()] if command == "run" else ["leaderboard"]
    return build


def _damaged_cache(ctx: Ctx) -> list[str]:
    cache = ctx.root / "damaged-cache"
    cache.mkdir()
    (cache / "calls.sqlite").write_bytes(b"this is not an SQLite database at all\n" * 100)
    ctx.env_extra["STILLROOM_CACHE_DIR"] = str(cache)
    return ["run", ctx.spec()]


def _empty_judge_data(ctx: Ctx) -> list[str]:
    (ctx.root / "empty-questions").mkdir()

    def change(spec: dict):
        url = f"http://127.0.0.1:{closed_port()}/v1"
        spec["endpoints"] = {"judge": {"kind": "openai", "base_url": url, "model": "m"}}
        spec["evaluators"] = [{"kind": "vicuna", "judge": "judge", "reference": "judge",
                               "data_dir": str(ctx.root / "empty-questions")}]
    return ["run", ctx.edit(change)]


def _predictions(content: bytes | None, name: str = "preds.txt"):
    def build(ctx: Ctx) -> list[str]:
        preds = ctx.root / name
        if content is None:
            preds.mkdir()
        else:
            preds.write_bytes(content)
        (ctx.root / "refs.txt").write_text("a\nb\n")
        return ["eval", "--evaluator", "rouge", "--predictions", str(preds), "--references", str(ctx.root / "refs.txt"),
                "--output-dir", str(ctx.root / "runs")]
    return build


def _spec_bytes(content: bytes, name: str = "spec.toml"):
    def build(ctx: Ctx) -> list[str]:
        path = ctx.root / name
        path.write_bytes(content)
        return ["run", str(path)]
    return build


def _gkd_with_an_api_teacher(ctx: Ctx) -> list[str]:
    """GKD needs the teacher's full logits; an API teacher has none. The method says so when it starts, after
    the data stage has read the file: that stage alone must not keep the run folder."""
    def change(spec: dict):
        spec["endpoints"] = {"t": {"kind": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1", "model": "m"}}
        spec["teacher"] = {"kind": "api", "endpoint": "t"}
        spec["methods"] = [{"kind": "gkd"}]
    return ["run", ctx.edit(change)]


def _output_dir(value: str):
    def build(ctx: Ctx) -> list[str]:
        (ctx.root / "a-file").write_text("x\n")
        return ["run", ctx.edit(_set("output_dir", value.replace("{root}", str(ctx.root))))]
    return build


CASES = [
    # --- names that could escape the run folder, or collide
    Case("method-label-dotdot", _methods({"kind": "sft", "label": "../../escaped"}),
         ("methods[0].label", "'../../escaped' is not a usable name")),
    Case("method-label-slash", _methods({"kind": "sft", "label": "a/b"}), ("methods[0].label", "not a usable name")),
    Case("method-label-absolute", _methods({"kind": "sft", "label": "/tmp/x"}), ("methods[0].label",)),
    Case("method-label-too-long", _methods({"kind": "sft", "label": LONG}), ("methods[0].label", "at most 64")),
    Case("evaluator-label-dotdot", _evaluators({"kind": "exact_match", "label": "../e", "limit": 2}),
         ("evaluators[0].label", "not a usable name")),
    Case("method-labelled-teacher", _methods({"kind": "sft", "label": "teacher"}),
         ("methods[0].label", "'teacher' is the name of the teacher row")),
    Case("method-labelled-base", _methods({"kind": "sft", "label": "Base"}), ("methods[0].label", "base row")),
    Case("duplicate-evaluator-labels", _evaluators({"kind": "exact_match", "limit": 2}, {"kind": "exact_match"}),
         ("evaluators[1].label", "evaluators[0] is also named 'exact_match'")),
    Case("duplicate-evaluator-labels-explicit", _evaluators({"kind": "exact_match", "label": "em"},
                                                            {"kind": "rouge", "label": "em"}),
         ("evaluators[1].label", "also named 'em'")),
    Case("run-name-too-long", lambda c: ["run", c.edit(_set("name", "n" * 200))], ("name:", "at most 64")),
    Case("seed-beyond-64-bits", lambda c: ["run", c.edit(_set("seed", 2 ** 70))], ("seed:", "does not fit in 64 bits")),
    Case("data-seed-beyond-64-bits", lambda c: ["spec", "validate", c.edit(_set("data.seed", -(2 ** 80)))],
         ("data.seed:", "64 bits")),
    # --- nested references
    Case("nested-referee-endpoint", _lion("refere", "t", "validate"),
         ("methods[0].referee.endpoint", "no endpoint named 'refere'")),
    Case("nested-writer-endpoint", _lion("t", "writer"),
         ("methods[0].instruction_generator.endpoint", "no endpoint named 'writer'")),
    Case("nested-optional-reward-endpoint", lambda c: ["spec", "validate", c.edit(_set("methods", [
        {"kind": "gkd_rl", "reward": {"kind": "llm", "endpoint": "rewarder"}}]))],
         ("methods[0].reward.endpoint", "no endpoint named 'rewarder'")),
    # --- folders checked before any work
    Case("home-is-a-file", _env(STILLROOM_HOME="{root}/a-file"), ("STILLROOM_HOME", "a-file")),
    Case("cache-is-a-file", _env(STILLROOM_CACHE_DIR="{root}/a-file"), ("STILLROOM_CACHE_DIR", "a-file")),
    Case("cache-under-proc", _env(STILLROOM_CACHE_DIR="/proc/stillroom-cache"), ("STILLROOM_CACHE_DIR", "/proc")),
    Case("output-dir-under-proc", _output_dir("/proc/stillroom-runs"), ("output_dir", "/proc/stillroom-runs")),
    Case("output-dir-is-a-file", _output_dir("{root}/a-file"), ("output_dir", "a-file")),
    Case("empty-judge-data-folder", _empty_judge_data, ("evaluators[0].data_dir", "empty-questions", "is empty")),
    Case("damaged-store-run", _damaged_store("run"), ("leaderboard.sqlite", "damaged")),
    Case("damaged-store-leaderboard", _damaged_store("leaderboard"), ("leaderboard.sqlite", "damaged")),
    Case("cache-not-a-database", _damaged_cache, ("calls.sqlite", "cannot be read")),
    # --- models that cannot load, and a method that refuses its teacher after the data stage: no run folder left
    Case("student-model-missing-no-folder", lambda c: ["run", c.edit(_set("student.model", str(c.root / "no-model")))],
         ("student.model", "no-model", "does not exist")),
    Case("teacher-model-missing-no-folder", lambda c: ["run", c.edit(_with_teacher(
        {"kind": "hf", "model": str(c.root / "no-teacher"), "device": "cpu"}))], ("teacher.model", "no-teacher")),
    Case("teacher-not-a-model-no-folder", lambda c: ["run", c.edit(_with_teacher(
        {"kind": "hf", "model": str(c.root / "home"), "device": "cpu"}))], ("teacher.model", "no config.json")),
    Case("method-refuses-its-teacher-no-folder", _gkd_with_an_api_teacher, ("methods[gkd]", "white-box teacher")),
    # --- data
    Case("prompt-null", _data("null.jsonl", _lines(RECORDS[0], {"prompt": None, "target": "t"})),
         ("null.jsonl:2", "field 'prompt' is null")),
    Case("target-null", _data("tnull.jsonl", _lines(RECORDS[0], RECORDS[1], {"prompt": "p", "target": None})),
         ("tnull.jsonl:3", "field 'target' is null")),
    Case("alpaca-instruction-null", _data("alpaca.json", json.dumps([{"instruction": None, "output": "o"}])),
         ("alpaca.json#0", "field 'instruction' is null")),
    Case("json-array-of-numbers", _data("numbers.json", "[1, 2, 3]"), ("numbers.json#0", "JSON object", "int")),
    Case("jsonl-not-utf8", _data("latin.jsonl", _lines(RECORDS[0]).encode() + b'{"prompt": "caf\xe9"}\n'),
         ("latin.jsonl:2", "not UTF-8")),
    Case("csv-not-utf8", _data("latin.csv", b"prompt,target\nok,fine\ncaf\xe9,x\n"), ("latin.csv:3", "not UTF-8")),
    Case("data-path-is-a-folder", lambda c: ["run", c.edit(_set("data.path", str(c.root / "home")))],
         ("home", "is a folder")),
    # --- the error boundary
    Case("spec-not-utf8", _spec_bytes(b'name = "x"\n# caf\xe9\n'), ("spec.toml:2", "not UTF-8")),
    Case("spec-is-a-folder", lambda c: ["spec", "validate", str(c.root / "home")], ("home", "is a folder")),
    Case("spec-name-too-long", lambda c: ["run", str(c.root / ("s" * 300 + ".toml"))], ("File name too long",)),
    Case("predictions-not-utf8", _predictions(b"ok\n\xff\xfe broken\n"), ("preds.txt", "not UTF-8")),
    Case("predictions-is-a-folder", _predictions(None), ("preds.txt", "folder where a file is expected")),
    Case("prompts-not-utf8", _prompts(b'{"id": 1, "prompt": "caf\xe9"}\n'), ("prompts.jsonl", "not UTF-8")),
    Case("serve-port-out-of-range", lambda c: ["serve", str(c.tiny), "--port", "70000"],
         ("stillroom serve:", "--port", "65535")),
    Case("long-value-is-cut", lambda c: ["spec", "validate", c.edit(_set("budget.steps", "y" * 500_000))],
         ("budget.steps", "more characters")),
    # --- what users see
    Case("cache-clear-without-terminal", lambda c: ["cache", "clear"], ("cache clear", "--yes")),
    Case("completion-unknown-shell", lambda c: ["completion", "tcsh"], ("completion", "unknown shell 'tcsh'")),
]
BY_ID = {case.id: case for case in CASES}


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, tiny_model_dir):
    # stdin not a terminal: `cache clear` must ask for --yes
    return run_cases(request, tmp_path_factory.mktemp("hardening"), tiny_model_dir, BY_ID, timeout=120,
                     stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_hardened_input_fails_cleanly(outcomes, case_id):
    case = BY_ID[case_id]
    done, ctx = outcomes[case_id]
    assert done.returncode == 2, str(done)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, str(done)
    lines = meaningful_lines(done.stderr)
    assert len(lines) == 1, f"expected one meaningful stderr line, got {len(lines)}:\n{done}"
    for part in case.expect:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}\n{done}"
    assert len(lines[0]) <= 600, f"an error line of {len(lines[0])} characters"
    assert not half_written(ctx.root, skip=(ctx.root / "runs",))
    # nothing escaped: no file anywhere near the case root but the ones the case wrote itself
    assert not (ctx.root.parent / "escaped").exists() and not (ctx.root / "escaped").exists()
    if done.argv[0] == "run":  # a spec that fails its checks leaves no run folder behind
        runs = ctx.root / "runs"
        left = [p for p in runs.rglob("*") if p.is_dir()] if runs.exists() else []
        assert not left, f"run folders left behind: {left}"


def test_there_are_forty_cases():
    assert len(CASES) >= 40 and len(BY_ID) == len(CASES)


def test_raise_errors_still_shows_the_traceback(rel_root):
    """STILLROOM_RAISE_ERRORS=1 turns the boundary off: the not-UTF-8 predictions file raises with a traceback."""
    (rel_root / "p.txt").write_bytes(b"\xff\n")
    (rel_root / "r.txt").write_text("a\n")
    done = stillroom(["eval", "--evaluator", "rouge", "--predictions", str(rel_root / "p.txt"), "--references",
                      str(rel_root / "r.txt")], cli_env(rel_root, STILLROOM_RAISE_ERRORS="1"), cwd=rel_root, timeout=60)
    assert done.returncode not in (0, 2) and "Traceback" in done.stderr and "UnicodeDecodeError" in done.stderr, str(done)


def test_bom_files_are_read_and_the_csv_header_is_clean(tmp_path, stillroom_host):
    """UTF-8 files with a byte-order mark (Excel, Notepad) are data like any other: no \\ufeff in a field name."""
    import stillroom

    csv = tmp_path / "bom.csv"
    csv.write_bytes("\ufeffprompt,target\nWhat is 1 + 1?,2\nWhat is 2 + 2?,4\n".encode())
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(("\ufeff" + _lines(*RECORDS[:3])).encode())
    for path, count in ((csv, 2), (jsonl, 3)):
        generator = stillroom.build("generator", "file", path=str(path), test_size=1)
        built = generator.build_dataset()
        records = built["train"] + built["test"]
        assert len(records) == count and all(r["prompt"] and "\ufeff" not in r["prompt"] for r in records), records
    spec = tmp_path / "spec.toml"
    spec.write_bytes(b"\xef\xbb\xbf" + b'name = "bom"\n')
    from stillroom.specs import read_spec_file

    assert read_spec_file(spec) == {"name": "bom"}


def test_url_and_odd_names_become_one_folder_name():
    """`eval --model http://...` names its subject with safe_name: one segment, no credentials, distinct texts
    never share a folder."""
    from stillroom.paths import inside, safe_name

    url_name = safe_name("default@http://127.0.0.1:8000/v1")
    assert "/" not in url_name and ":" not in url_name and url_name.startswith("default-http-127.0.0.1-8000-v1")
    assert safe_name("a/b") != safe_name("a:b") and safe_name("tiny") == "tiny"
    assert len(safe_name("x" * 1000)) <= 64 and safe_name("..") not in ("..", ".")
    with pytest.raises(Exception, match="outside"):
        inside(Path("/tmp/run"), Path("../elsewhere"))


def test_completion_script_and_completions(rel_root):
    """`stillroom completion bash` prints a script; the shell's call back (_STILLROOM_COMPLETE) completes commands."""
    env = cli_env(rel_root)
    script = stillroom(["completion", "bash"], env, cwd=rel_root, timeout=60)
    assert script.returncode == 0 and "_STILLROOM_COMPLETE" in script.stdout and "complete " in script.stdout
    answer = subprocess.run([PYTHON, "-m", "stillroom.cli"], capture_output=True, text=True, timeout=60, cwd=rel_root,
                            env={**env, "_STILLROOM_COMPLETE": "complete_bash", "COMP_WORDS": "stillroom lea",
                                 "COMP_CWORD": "1"})
    assert answer.returncode == 0 and answer.stdout.split() == ["leaderboard"], answer


def test_a_second_resume_says_who_holds_the_run(rel_root, tiny_model_dir):
    """While one process holds an unfinished run, `run --resume` of the same spec exits 2 naming pid and host,
    and trains nothing."""
    import socket

    records = rel_root / "data.jsonl"
    records.write_text(_lines(*RECORDS))
    ctx = Ctx(rel_root, tiny_model_dir)
    spec_path = Path(ctx.spec())
    env = cli_env(rel_root)
    # an unfinished run of this spec: its folder and manifest, as a run killed after starting leaves them
    probe = (f"import json, sys; from pathlib import Path; from stillroom.specs import load_spec, spec_hash; "
             f"s = load_spec({str(spec_path)!r}); folder = Path({str(rel_root)!r}) / 'runs' / s.name / 'r1'; "
             f"(folder / 'stages').mkdir(parents=True); "
             f"(folder / 'manifest.json').write_text(json.dumps({{'spec_hash': spec_hash(s)}})); print(folder)")
    folder = Path(subprocess.run([PYTHON, "-c", probe], env=env, capture_output=True, text=True, check=True,
                                 timeout=60).stdout.strip())
    holder = subprocess.Popen([PYTHON, "-c", f"import sys, time; from stillroom import rundir; "
                                             f"rundir.hold_lock({str(folder)!r}); print('held', flush=True); time.sleep(60)"],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = stillroom(["run", str(spec_path), "--resume"], env, cwd=rel_root, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, str(done)
    lines = meaningful_lines(done.stderr)
    assert len(lines) == 1 and f"pid {holder.pid} on host {socket.gethostname()}" in lines[0], str(done)
    assert str(folder) in lines[0] and not (folder / "stages" / "data").exists()


def test_run_ends_with_the_report_path_and_the_leaderboard_command(rel_root, tiny_model_dir):
    """The last lines of a finished run: where report.html is, and the command that shows the leaderboard."""
    records = rel_root / "data.jsonl"
    records.write_text(_lines(*RECORDS))
    ctx = Ctx(rel_root, tiny_model_dir)
    spec = ctx.base()
    spec["budget"]["steps"] = 1
    done = stillroom(["run", ctx.spec(spec)], cli_env(rel_root), cwd=rel_root, timeout=240)
    assert done.returncode == 0, str(done)
    tail = done.stdout.strip().splitlines()[-2:]
    assert tail[0].startswith("report: ") and Path(tail[0][len("report: "):]).is_file(), tail
    assert tail[1].startswith("leaderboard: stillroom leaderboard --run "), tail
