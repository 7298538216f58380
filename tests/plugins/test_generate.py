"""`stillroom generate` through a real subprocess against the loopback fault server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stillroom.testing.fault_server import start_fault_server

STILLROOM = str(Path(sys.executable).with_name("stillroom"))


@pytest.fixture
def cli(stillroom_env):
    env = {**os.environ, "STILLROOM_CACHE_DIR": str(stillroom_env / "cache"),
           "STILLROOM_HOME": str(stillroom_env / "home"), "STILLROOM_NO_PROGRESS": "1"}

    def run(*args: str, plugins: str | None = "openai") -> subprocess.CompletedProcess:
        # Only this plugin by default: the test is about `generate`, and loading every plugin imports torch.
        extra = {"STILLROOM_PLUGINS": plugins} if plugins else {}
        return subprocess.run([STILLROOM, "generate", *args], capture_output=True, text=True, timeout=120,
                              env={**env, **extra})

    return run


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_generate_writes_answers_and_a_rerun_sends_nothing(cli, clean, tmp_path):
    prompts = write_lines(tmp_path / "prompts.jsonl", [
        {"id": 1, "prompt": "the sea", "topic": "poems"},
        {"id": "b", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two words"}]},
        "",
        {"id": 3, "prompt": "one two three four"},
    ])
    out = tmp_path / "answers" / "out.jsonl"
    args = ["--base-url", clean.base_url, "--model", "tiny", "--prompts", str(prompts), "--out", str(out),
            "--n", "2", "--max-tokens", "4", "--temperature", "0.5", "--seed", "3", "--concurrency", "2"]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, "b", 3]
    assert rows[0]["topic"] == "poems" and rows[0]["prompt"] == "the sea"
    assert rows[0]["completions"] == ["echo: the sea", "echo: the sea #1"]
    assert rows[1]["completions"] == ["echo: two words", "echo: two words #1"]
    assert rows[2]["completions"] == ["echo: one two three", "echo: one two three"]  # cut at --max-tokens
    assert rows[0]["usage"] == {"prompt_tokens": 2, "completion_tokens": 7}
    assert rows[1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 7}
    assert clean.stats()["by_path"] == {"/v1/completions": 2, "/v1/chat/completions": 1}

    first = out.read_text()
    out.unlink()
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert out.read_text() == first
    assert clean.stats()["requests"] == 3  # everything came from the call cache
    assert "3 from the cache" in again.stderr


def test_chat_flag_sends_prompts_as_user_messages(cli, clean, tmp_path):
    prompts = write_lines(tmp_path / "p.jsonl", [{"id": "x", "prompt": "hello there"}])
    out = tmp_path / "o.jsonl"
    done = cli("--base-url", clean.base_url, "--model", "tiny", "--prompts", str(prompts), "--out", str(out), "--chat")
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["completions"] == ["echo: hello there"]
    assert clean.stats()["by_path"] == {"/v1/chat/completions": 1}


def test_malformed_line_is_a_one_line_error_at_file_line(cli, clean, tmp_path):
    lines = [{"id": 1, "prompt": "fine"}, "", '{"id": 2, "prompt": "unterminated']
    prompts = write_lines(tmp_path / "bad.jsonl", lines)
    out = tmp_path / "out.jsonl"
    done = cli("--base-url", clean.base_url, "--model", "tiny", "--prompts", str(prompts), "--out", str(out))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()  # one line, no traceback
    assert line == f"{prompts}:3: malformed JSON line: Unterminated string starting at (column 21)"
    assert not out.exists() and clean.stats()["requests"] == 0


@pytest.mark.parametrize("bad, message", [
    ('{"prompt": "no id"}', "missing 'id'"),
    ('{"id": 2, "prompt": "a", "messages": []}', "exactly one of 'prompt'"),
    ('{"id": 2, "prompt": ["a"]}', "'prompt' must be a string"),
    ('{"id": 2, "messages": [{"role": "user"}]}', "'messages' must be"),
    ('{"id": 1, "prompt": "same id"}', "duplicate id 1 (first on line 1)"),
    ('[1, 2]', "each line must be a JSON object"),
])
def test_each_kind_of_bad_line_names_its_line(tmp_path, bad, message):
    from stillroom import UserError
    from stillroom.plugins.openai.generate_command import read_prompts

    prompts = write_lines(tmp_path / "bad.jsonl", [{"id": 1, "prompt": "fine"}, "", bad])
    with pytest.raises(UserError) as caught:
        read_prompts(prompts, chat=False)
    assert caught.value.location == f"{prompts}:3" and message in caught.value.message


def test_bad_endpoint_options_are_user_errors(cli, clean, tmp_path):
    prompts = write_lines(tmp_path / "p.jsonl", [{"id": 1, "prompt": "x"}])
    out = str(tmp_path / "o.jsonl")
    done = cli("--base-url", clean.base_url, "--model", "tiny", "--prompts", str(prompts), "--out", out,
               "--set", "concurency=3")
    assert done.returncode == 2 and "unknown field 'concurency' (did you mean 'concurrency'?)" in done.stderr
    done = cli("--endpoint", "opneai", "--model", "tiny", "--prompts", str(prompts), "--out", out)
    assert done.returncode == 2 and "did you mean 'openai'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_generate_with_the_hf_endpoint(cli, tmp_path, request, stillroom_host):
    if "hf" not in stillroom_host.components["endpoint"]:
        pytest.skip("the hf endpoint is not available")
    model_dir = request.getfixturevalue("tiny_model_dir")
    prompts = write_lines(tmp_path / "p.jsonl", [{"id": i, "messages": [{"role": "user", "content": f"count {i}"}]}
                                                 for i in range(3)])
    out = tmp_path / "o.jsonl"
    done = cli("--endpoint", "hf", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out),
               "--max-tokens", "5", "--n", "2", "--temperature", "1.0", "--seed", "0", plugins="openai,hf")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2]
    assert all(len(r["completions"]) == 2 and all(isinstance(t, str) for t in r["completions"]) for r in rows)
    assert all(0 < r["usage"]["completion_tokens"] <= 10 for r in rows)


def test_interrupted_run_keeps_every_answer_received(cli, stillroom_env, tmp_path):
    import signal
    import time

    prompts = write_lines(tmp_path / "p.jsonl", [{"id": i, "prompt": f"slow {i}"} for i in range(40)])
    out = tmp_path / "o.jsonl"
    with start_fault_server(delay_ms=100) as slow:
        args = ["--base-url", slow.base_url, "--model", "tiny", "--prompts", str(prompts), "--out", str(out),
                "--concurrency", "2"]
        env = {**os.environ, "STILLROOM_CACHE_DIR": str(stillroom_env / "cache"), "STILLROOM_PLUGINS": "openai",
               "STILLROOM_NO_PROGRESS": "1"}
        process = subprocess.Popen([STILLROOM, "generate", *args], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while slow.stats()["requests"] < 10 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr and "run the same command again" in stderr and "Traceback" not in stderr
        assert "--resume" not in stderr  # generate has no --resume: the rerun is the resume
        assert not out.exists()  # written atomically at the end, never half
        sent, answered = slow.stats()["requests"], slow.stats()["answered_distinct"]
        slow.reset()
        done = cli(*args[:-1], "16")  # concurrency is not part of the endpoint's identity: the cache still hits
        assert done.returncode == 0, done.stderr
        assert len(out.read_text().splitlines()) == 40
        rerun = slow.stats()["requests"]
        # every answer received before Ctrl-C was kept; only the two in flight at that moment may be lost
        assert rerun + sent >= 40 and rerun <= 40 - answered + 2
