"""Testing helpers for stillroom and for plugin authors (a pytest plugin, loaded automatically).

It builds real tiny models offline: a byte-level BPE tokenizer trained with ``tokenizers`` on a small
corpus, with ChatML-style chat markers, and a Llama of a few layers. Fixtures give every test a fresh plugin
host (first-party plugins only; installed third-party plugins are never autoloaded) and scratch cache and
store folders.

The plugin changes no environment variable unless a test uses its fixtures (``stillroom_env`` and the fixtures
built on it set the offline variables for that test) or the session opts in (``stillroom_offline = true`` in the
pytest ini file, or ``STILLROOM_TEST_OFFLINE=1``).

It also runs ``stillroom serve`` for a test: :func:`served_model` starts it on a :func:`free_port` of loopback in
a subprocess, waits on ``/health`` and stops it by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PLAIN_SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>"]
_CORPUS = """The quick brown fox jumps over the lazy dog. A teacher answers questions; a student learns.
Question: what is 12 + 7? Answer: 19. Reasoning: 12 plus 7 makes 19, so the answer is 19.
Write a short poem about the sea. Explain why the sky is blue. List three prime numbers: 2, 3, 5.
user assistant system The answer is (A) (B) (C) (D) yes no true false Let's think step by step.
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = ( ) . , ; : ! ? ' " [ ] { } < > #
"""


def tiny_tokenizer(corpus: str | list[str] | None = None, vocab_size: int = 600, *, chat: bool = True):
    """A byte-level BPE tokenizer trained on ``corpus`` (text, or a list of lines) with a pad token, padding
    on the left for generation.

    ``chat`` (the default) adds the ChatML markers as special tokens, ends sequences with ``<|im_end|>`` and sets
    a chat template; ``chat=False`` gives a plain tokenizer ending sequences with ``<|endoftext|>``, for students
    trained on raw text (the step-by-step example)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = (corpus or _CORPUS).splitlines() if isinstance(corpus, str) or corpus is None else list(corpus)
    lines = [line for line in lines if line.strip()]
    special = SPECIAL_TOKENS if chat else PLAIN_SPECIAL_TOKENS
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # the small default corpus is repeated so its pairs are frequent enough to be merged
    backend.train_from_iterator(lines * 4 if chat else lines, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|pad|>",
                                        eos_token="<|im_end|>" if chat else "<|endoftext|>",
                                        bos_token=None, unk_token=None)
    if chat:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|endoftext|>"]})
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_llama(tokenizer, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0, max_positions: int = 2048):
    """A randomly initialised Llama sized for the tokenizer. Its context (``max_positions``; rotary, so it adds no
    weights) holds the judge and referee prompts tests send it: `stillroom serve` refuses longer prompts."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden % heads:
        from stillroom.roles import UserError

        raise UserError(f"hidden ({hidden}) must be a multiple of heads ({heads})", "tiny model")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_tiny_model(path: str | Path, *, corpus: str | list[str] | None = None, vocab_size: int = 600,
                    chat: bool = True, **model_options) -> Path:
    """Build a tiny tokenizer and Llama and save both to ``path`` (a folder ``from_pretrained`` loads)."""
    path = Path(path)
    tokenizer = tiny_tokenizer(corpus, vocab_size, chat=chat)
    model = tiny_llama(tokenizer, **model_options)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def install_plugin(site: str | Path, name: str, version: str, entry_points: dict[str, str],
                   sources: dict[str, str]) -> Path:
    """Write a real installed distribution ``name`` into ``site``, a folder to put on ``sys.path`` or
    ``PYTHONPATH``: its metadata, one ``stillroom`` entry point per ``entry_points`` item (entry name -> module)
    and a module file per ``sources`` item (module -> source text). Returns ``site``. Loads exactly like a
    pip-installed plugin, so a test can go through the real CLI."""
    site = Path(site)
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text("[stillroom]\n" + "".join(f"{entry} = {module}\n"
                                                                    for entry, module in entry_points.items()))
    for module, source in sources.items():
        (site / f"{module}.py").write_text(source)
    return site


def free_port() -> int:
    """A TCP port free on loopback (127.0.0.1) right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stillroom_command() -> list[str]:
    """The command line that runs the ``stillroom`` CLI of this interpreter's environment."""
    script = Path(sys.executable).with_name("stillroom")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from stillroom.cli import main; main()"]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def served_model(path: str | Path, *, home: str | Path | None = None, env: dict[str, str | None] | None = None,
                 log: str | Path | None = None, timeout: float = 90.0, **options: Any) -> Iterator[str]:
    """Run ``stillroom serve PATH`` on a free loopback port in a subprocess and yield its base URL
    (``http://127.0.0.1:PORT``; the OpenAI API is under ``/v1``) once ``/health`` answers; stop it by PID at the end
    (SIGTERM, then SIGKILL after 10 s).

    ``options`` are ``stillroom serve`` options (``name="tiny"``, ``device="cpu"``, ``max_batch=16`` for
    ``--max-batch 16``; None leaves one out). ``home`` gives the server its own call cache and store folders,
    ``env`` sets more environment variables (None removes one), ``log`` is where its output goes (a temporary file
    otherwise). A server that exits or is not healthy within ``timeout`` seconds is a RuntimeError with the end of
    its log.
    """
    command = [*stillroom_command(), "serve", str(path), "--host", "127.0.0.1", "--port", str(free_port())]
    for key, value in options.items():
        if value is not None:
            command += ["--" + key.replace("_", "-"), str(value)]
    variables = {**os.environ, "HF_HUB_OFFLINE": "1", "STILLROOM_NO_PROGRESS": "1"}
    if home is not None:
        variables.update(STILLROOM_CACHE_DIR=str(Path(home) / "cache"), STILLROOM_HOME=str(Path(home) / "home"))
    for key, value in (env or {}).items():
        if value is None:
            variables.pop(key, None)
        else:
            variables[key] = value
    url = "http://127.0.0.1:" + command[command.index("--port") + 1]
    with contextlib.ExitStack() as stack:
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stillroom-serve-"))) / "serve.log"
        log = Path(log)
        output = stack.enter_context(log.open("w"))
        process = subprocess.Popen(command, env=variables, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if process.poll() is not None:
                    raise RuntimeError(f"`stillroom serve` exited (code {process.returncode}):\n"
                                       + log.read_text()[-2000:])
                if time.monotonic() > deadline:
                    raise RuntimeError(f"`stillroom serve` not healthy in {timeout:g} s:\n" + log.read_text()[-2000:])
                time.sleep(0.2)
            yield url
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()


def first_party_host():
    """A fresh plugin host with stillroom's own plugins only."""
    from stillroom.plugin_manager import make_host

    return make_host(distributions={"stillroom"})


@pytest.fixture
def stillroom_env(tmp_path, monkeypatch):
    """Scratch folders for the call cache, models and the results store; no progress bars; the offline
    variables (``OFFLINE_ENV``) unless the environment already sets them. All undone after the test."""
    for key, value in OFFLINE_ENV.items():
        if key not in os.environ:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("STILLROOM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STILLROOM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STILLROOM_NO_PROGRESS", "1")
    return tmp_path


@pytest.fixture
def stillroom_host(stillroom_env):
    """A fresh plugin host (first-party plugins only) made the process-wide one for the test."""
    from stillroom.plugin_manager import use_host

    host = first_party_host()
    previous = use_host(host)
    yield host
    use_host(previous)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama + BPE tokenizer, built once per test session."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A second, larger tiny model with the same tokenizer as ``tiny_model_dir`` (same corpus, same vocab)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-teacher") / "model", layers=3, hidden=96, seed=1)


# What a test of tiny local models wants: no hub look-ups (a miss fails in seconds instead of ~30 s), no
# warning about TRL's experimental trainers, no tokenizer thread pools forked into subprocesses.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
               "TOKENIZERS_PARALLELISM": "false"}


def pytest_addoption(parser):
    parser.addini("stillroom_offline", type="bool", default=False,
                  help="stillroom: set the offline variables (HF_HUB_OFFLINE, ...) for the whole session, as "
                       "STILLROOM_TEST_OFFLINE=1 does; otherwise only tests using the stillroom_env fixture get them")


def pytest_configure(config):
    """Loaded in every pytest session where stillroom is installed, so it changes nothing unless asked:
    ``stillroom_offline = true`` in the ini file or ``STILLROOM_TEST_OFFLINE=1`` opts a whole session in."""
    if config.getini("stillroom_offline") or os.environ.get("STILLROOM_TEST_OFFLINE", "") not in ("", "0"):
        for key, value in OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
