"""The quickstart teacher and student: tiny character-level Llamas kept in the user cache.

The teacher is trained in-process on the arithmetic task the first time a configuration is used and saved
under ``<cache dir>/models/<kind>-<hash of its config>``; later runs load it. The student is a random
initialisation saved the same way. Both then hand generation and training to the ``hf`` plugin (built through
the context, never imported), so they behave exactly like any other transformers teacher and student.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from stillroom import Completion, GenerationRequest, Student, Teacher
from stillroom import paths

from stillroom.plugins.synthetic.arithmetic import draw_split
from stillroom.plugins.synthetic.char_tokenizer import ALPHABET, CHAT_TEMPLATE, SPECIAL_TOKENS, char_tokenizer
from stillroom.plugins.synthetic.config import QuickstartStudentConfig, QuickstartTeacherConfig

# Bump when the training code or the saved layout changes, so old cached models are not reused.
FORMAT_VERSION = 4  # 3: the teacher trains through the engine (linear schedule); 4: a validation share
# of problems is carved out of the training side (the teacher no longer trains on it); students may be pretrained
TRAINING_FILE = "training.json"


def _say(line: str) -> None:
    print(f"[quickstart] {line}", file=sys.stderr, flush=True)


def cache_key(kind: str, options: dict[str, Any]) -> str:
    """``<kind>-<hash>`` of everything that shapes the saved weights (options, tokenizer, format version)."""
    blob = json.dumps({"kind": kind, "version": FORMAT_VERSION, "options": options,
                       "tokenizer": [SPECIAL_TOKENS, ALPHABET, CHAT_TEMPLATE]}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` so two processes never build the same model at once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: a duplicate build is wasted time, not an error
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_model(key: str, build: Callable[[Path], dict[str, Any]]) -> Path:
    """The folder of cached model ``key``; ``build(folder)`` writes it (and returns metadata) when missing.
    A folder appears only once complete: it is built under a temporary name and renamed into place.
    ``build`` should create ``folder`` only once it has something to write (training happens before)."""
    root = paths.cache_dir() / "models"
    final = root / key
    if (final / TRAINING_FILE).exists():
        return final
    with _exclusive(root / f"{key}.lock"):
        if (final / TRAINING_FILE).exists():  # another process built it while we waited
            return final
        # Under the lock no other process is building this key, so every `<key>.partial*` left behind is
        # the debris of a process killed mid-build: remove them all, not only one named after our pid.
        for stale in root.glob(f"{key}.partial*"):
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f"{key}.partial{os.getpid()}"
        try:
            # build() creates the folder only when it writes the model, after training: a process killed
            # while it trains leaves nothing behind, one killed while it saves is cleaned up above next time
            metadata = build(partial)
            partial.mkdir(parents=True, exist_ok=True)
            (partial / TRAINING_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return final


def held_out_accuracy(model, tokenizer, config: QuickstartTeacherConfig) -> float | None:
    """Exact match of the final answer on problems from the task's test side (never trained on)."""
    return task_accuracy(model, tokenizer, config.task, config.training.eval_size)


def task_accuracy(model, tokenizer, task, size: int) -> float | None:
    """Exact match of the final answer on ``size`` problems from ``task``'s test side."""
    from stillroom.plugins.synthetic.training import greedy_generate

    from stillroom.plugins.synthetic.arithmetic import SHARES, problem_space

    size = min(size, int(problem_space(task) * SHARES["test"] * 0.5))  # a small corpus has few test problems
    if not size:
        return None
    problems = draw_split(task, "test", size, seed=10_007)
    longest = max(len(tokenizer(p["target"], add_special_tokens=False)["input_ids"]) for p in problems)
    outputs = greedy_generate(model, tokenizer, [p["prompt"] for p in problems], max_new_tokens=longest + 8)
    suffix = [f"The answer is {p['answer']}." for p in problems]
    return sum(out.strip().endswith(tail) for out, tail in zip(outputs, suffix)) / len(problems)


def weights_checksum(folder: Path) -> str:
    """sha256 of the saved weight files, so a run can say exactly which base it started from."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def train_teacher(config: QuickstartTeacherConfig, folder: Path) -> dict[str, Any]:
    """Train the quickstart teacher into ``folder`` (model and tokenizer); returns what the cache records."""
    import torch

    from stillroom.plugins.synthetic.training import build_llama, parameter_count, train_on_task

    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        tokenizer = char_tokenizer()
        model = build_llama(tokenizer, config.shape, seed=config.training.seed)
        count = parameter_count(model)
        _say(f"training the quickstart teacher once ({count:,} parameters, {config.training.steps} steps); "
             f"later runs load it from {folder.parent}")
        metrics = train_on_task(model, tokenizer, config.task, config.training, report=_say)
        started = time.perf_counter()
        accuracy = held_out_accuracy(model, tokenizer, config)
        metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
    finally:
        torch.set_num_threads(previous_threads)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shown = f"{accuracy:.3f}" if accuracy is not None else "not measured"
    _say(f"teacher trained in {metrics['train_seconds']:.0f} s; held-out exact match {shown}")
    return {"role": "teacher", "parameters": count, "held_out_exact_match": accuracy,
            "held_out_size": config.training.eval_size, "config": config.model_dump(mode="json"), **metrics}


def save_student(config: QuickstartStudentConfig, folder: Path) -> dict[str, Any]:
    """Save the student (model and tokenizer) into ``folder``: random weights, then pretrained on the generic
    corpus when ``config.pretraining`` is set. Returns its lineage (what the cache records)."""
    from stillroom.plugins.synthetic.training import build_llama, parameter_count

    tokenizer = char_tokenizer()
    model = build_llama(tokenizer, config.shape, seed=config.seed)
    lineage: dict[str, Any] = {"role": "student", "parameters": parameter_count(model),
                               "config": config.model_dump(mode="json"), "pretrained": False}
    if config.pretraining is not None:
        lineage.update(pretrain_student(model, tokenizer, config))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lineage["checksum"] = weights_checksum(folder)
    return lineage


def pretrain_student(model, tokenizer, config: QuickstartStudentConfig) -> dict[str, Any]:
    """Pretrain ``model`` in place on the generic corpus (single-operation facts, never a task problem);
    returns the lineage: what it was pretrained on, for how long, and how well it knows the corpus."""
    import torch

    from stillroom.plugins.synthetic.training import parameter_count, train_on_task

    pretraining = config.pretraining
    corpus = pretraining.corpus
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small train fastest on one thread (see quickstart.DEFAULT_THREADS)
    try:
        _say(f"pretraining the quickstart student once ({parameter_count(model):,} parameters, "
             f"{pretraining.steps} steps on generic arithmetic facts); later runs load it from the cache")
        metrics = train_on_task(model, tokenizer, corpus, pretraining, description="quickstart student pretraining",
                                location="student.pretraining")
        accuracy = task_accuracy(model, tokenizer, corpus, pretraining.eval_size)
    finally:
        torch.set_num_threads(previous_threads)
    global PRETRAININGS
    PRETRAININGS += 1
    shown = f"{accuracy:.3f}" if accuracy is not None else "not measured"
    _say(f"student pretrained in {metrics['train_seconds']:.0f} s; exact match on held-out corpus facts {shown}")
    return {"pretrained": True,
            "pretrained_on": f"{corpus.operations}-operation facts ({' '.join(corpus.operators)}) on operands "
                             f"{corpus.min_operand}-{corpus.max_operand}, chat-formatted, drawn fresh each step",
            "pretraining": pretraining.model_dump(mode="json"), "pretraining_loss": metrics["loss"],
            "pretraining_steps": metrics["steps"], "pretraining_seconds": metrics["train_seconds"],
            "corpus_held_out_exact_match": accuracy}


PRETRAININGS = 0
"""How many times this process pretrained a student (a test asserts a cached base is not pretrained again)."""


class QuickstartTeacher(Teacher):
    """A tiny character-level Llama trained on the arithmetic task on first use (then cached) and served
    through the hf teacher."""

    name = "quickstart"
    Config = QuickstartTeacherConfig

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        options = self.config.model_dump(mode="json", include={"task", "shape", "training"})
        self.path = cached_model(cache_key("quickstart-teacher", options), lambda d: train_teacher(self.config, d))
        self.training = json.loads((self.path / TRAINING_FILE).read_text())
        self.hf = self.context.build("teacher", "hf", model=str(self.path), batch_size=self.config.batch_size,
                                     device=self.config.device)
        self.endpoint = self.hf.endpoint
        self.model = self.hf.model
        self.tokenizer = self.hf.tokenizer


class QuickstartStudent(Student):
    """A tiny character-level Llama sharing the quickstart teacher's tokenizer, random-initialised or (with
    ``pretraining``) pretrained once on generic arithmetic text and cached; trains and generates as an hf
    student."""

    name = "quickstart"
    Config = QuickstartStudentConfig

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        options = self.config.model_dump(mode="json", include={"shape", "seed", "pretraining"})
        if options.get("pretraining") is None:
            options.pop("pretraining")  # the key of a random-initialised student stays what it always was
        self.initial_path = cached_model(cache_key("quickstart-student", options),
                                         lambda d: save_student(self.config, d))
        self.lineage = json.loads((self.initial_path / TRAINING_FILE).read_text())
        self.hf = self.context.build("student", "hf", model=str(self.initial_path), init="pretrained",
                                     batch_size=self.config.batch_size, device=self.config.device,
                                     dtype=self.config.dtype)

    # The hf student does the work; these name the Student interface explicitly (a name the role declares is
    # found on the role class, so __getattr__ never sees it), the rest (target_loss, ...) passes through
    # __getattr__.
    @property
    def model(self):
        return self.hf.model

    @property
    def endpoint(self):
        return self.hf.endpoint

    @property
    def is_encoder_decoder(self) -> bool:
        return self.hf.is_encoder_decoder

    @property
    def tokenizer(self):
        return self.hf.tokenizer

    @property
    def path(self):
        return self.hf.path

    def fresh(self) -> Student:
        return self.hf.fresh()

    def save(self, path) -> None:
        self.hf.save(path)

    def load(self, path) -> Student:
        return self.hf.load(path)

    def generate(self, requests: list[GenerationRequest], *, description: str | None = None) -> list[list[Completion]]:
        return self.hf.generate(requests, description=description)

    def fit(self, records: list[dict[str, Any]], **options) -> dict[str, Any]:
        return self.hf.fit(records, **options)

    def encode_example(self, record: dict[str, Any], **options):
        return self.hf.encode_example(record, **options)

    def __getattr__(self, name: str):
        if name == "hf" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.hf, name)
