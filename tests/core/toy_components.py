"""A one-file plugin for core tests: small but real components of every role.

They exercise the contract (specs, stages, resume, store) without loading models: the "student" is a
lookup table that fit() fills from its records, so training is real and fast, and evaluation is exact.
"""

import json
import sys
import types
from pathlib import Path

from pydantic import Field

from stillroom import (
    Completion,
    ComponentConfig,
    Endpoint,
    EndpointRef,
    EvalResult,
    Evaluator,
    EvaluatorConfig,
    Generator,
    Method,
    MethodConfig,
    MetricValue,
    Student,
    Teacher,
    hookimpl,
)

CALLS = {"teacher": 0, "train": 0}
CRASH = {"after_teacher": False}  # a test sets it to kill a run between two stages


class EchoEndpoint(Endpoint):
    """Answers a prompt with its upper-case form (a deterministic stand-in for a model server)."""

    name = "echo"

    class Config(ComponentConfig):
        suffix: str = Field("", description="text appended to every answer")

    def identity(self):
        return {"kind": "echo", "suffix": self.config.suffix}

    def _generate(self, requests):
        CALLS["teacher"] += len(requests)
        self.stats["cost"] += 0.01 * len(requests)  # a price per call, as a paid API reports it
        out = []
        for r in requests:
            prompt = r.prompt or r.messages[-1]["content"]
            answer = prompt.upper() + self.config.suffix
            out.append([Completion(text=answer, prompt_tokens=len(prompt.split()),
                                   completion_tokens=len(answer.split()))] * r.n)
        return out


class EchoTeacher(Teacher):
    """A teacher that talks to a named endpoint."""

    name = "echo"

    class Config(ComponentConfig):
        endpoint: EndpointRef = Field(description="the spec endpoint to use")

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        self.endpoint = self.context.endpoint(self.config.endpoint)


class TableStudent(Student):
    """A student that memorises (prompt -> target) pairs; unknown prompts get an empty answer."""

    name = "table"

    class Config(ComponentConfig):
        capacity: int = Field(1000, description="most pairs remembered")

    def __init__(self, config=None, context=None, table=None):
        super().__init__(config, context)
        self.table = dict(table or {})

    def fresh(self):
        return TableStudent(self.config, self.context)

    def save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "table.json").write_text(json.dumps(self.table))

    def load(self, path):
        return TableStudent(self.config, self.context, json.loads((Path(path) / "table.json").read_text()))

    def fit(self, records):
        CALLS["train"] += 1
        for record in records[: self.config.capacity]:
            self.table[record["prompt"]] = record["target"]

    def generate(self, requests, *, description=None):
        return [[Completion(text=self.table.get(r.prompt or r.messages[-1]["content"], ""))] * r.n for r in requests]


class WordsGenerator(Generator):
    """Prompts 'word i' with targets 'WORD I'."""

    name = "words"

    class Config(ComponentConfig):
        train_size: int = Field(6, description="training records")
        test_size: int = Field(4, description="test records")

    def build_dataset(self):
        make = lambda i: {"id": str(i), "prompt": f"word {i}", "target": f"WORD {i}"}  # noqa: E731
        n = self.config.train_size
        return {"train": [make(i) for i in range(n)], "test": [make(i) for i in range(n, n + self.config.test_size)]}


class CopyMethod(Method):
    """Asks the teacher for the training targets, then fits the student on them (sequence-level KD in miniature)."""

    name = "copy"

    class Config(MethodConfig):
        pass

    def run(self, job):
        train = job.data["train"][: job.budget.train_examples]
        from stillroom import GenerationRequest

        def ask():
            answers = job.teacher.generate([GenerationRequest(prompt=r["prompt"]) for r in train])
            return [{**r, "target": a[0].text} for r, a in zip(train, answers)]

        records = job.jsonl_stage("teacher_answers", ask)
        if CRASH["after_teacher"]:
            raise RuntimeError("planned crash between stages")
        return job.model_stage("train", lambda student, folder: student.fit(records) or {"records": len(records)})


class GoldMethod(Method):
    """Fits the student on the gold targets."""

    name = "gold"
    uses_teacher = False

    class Config(MethodConfig):
        pass

    def run(self, job):
        records = job.data["train"][: job.budget.train_examples]
        return job.model_stage("train", lambda student, folder: student.fit(records) or {})


class CoinMethod(Method):
    """Fits the student on each of the budget's training records with probability 1/2, drawn from Python's
    ``random``: its result depends on the random state the stage starts from, so it shows whether stages are
    seeded from the entry's seed alone (and not from what ran before)."""

    name = "coin"
    uses_teacher = False

    class Config(MethodConfig):
        steps: int | None = Field(None, description="unused; here so the budget rule has a field to check")

    def run(self, job):
        import random

        def train(student, folder):
            kept = [r for r in job.train_records() if random.random() < 0.5]
            student.fit(kept)
            return {"records": len(kept), "optimizer_steps": 1, "train_sequences": len(kept)}

        return job.model_stage("train", train)


class MatchEvaluator(Evaluator):
    """Exact-match accuracy on one split of the run's data (the test split by default)."""

    name = "match"

    class Config(EvaluatorConfig):
        split: str = Field("test", description="the data split to score")

    def evaluate(self, subject):
        from stillroom import GenerationRequest, read_jsonl

        test = read_jsonl(Path(self.context.run_dir) / "stages" / "data" / f"{self.config.split}.jsonl")
        answers = subject.generate([GenerationRequest(prompt=r["prompt"]) for r in test])
        samples = [{"id": r["id"], "correct": a[0].text == r["target"]} for r, a in zip(test, answers)]
        value = sum(s["correct"] for s in samples) / len(samples)
        return EvalResult(metrics=[MetricValue(metric="acc", value=value, n=len(samples))], samples=samples)


toy = types.ModuleType("toy_plugin")
toy.stillroom_register_endpoints = hookimpl(lambda register: register(EchoEndpoint))
toy.stillroom_register_teachers = hookimpl(lambda register: register(EchoTeacher))
toy.stillroom_register_students = hookimpl(lambda register: register(TableStudent))
toy.stillroom_register_generators = hookimpl(lambda register: register(WordsGenerator))
toy.stillroom_register_methods = hookimpl(lambda register: (register(CopyMethod), register(GoldMethod),
                                                             register(CoinMethod)))
toy.stillroom_register_evaluators = hookimpl(lambda register: register(MatchEvaluator))
sys.modules.setdefault("toy_plugin", toy)


def make_toy_host():
    """The toy plugin host, built the same way in a child process (``--jobs``) as in the test."""
    from stillroom.plugin_manager import make_host

    return make_host(modules={"toy": toy}, entry_points=False)

TOY_SPEC = """
name = "toy"
seed = 3

[endpoints.up]
kind = "echo"

[teacher]
kind = "echo"
endpoint = "up"

[student]
kind = "table"

[data]
kind = "words"

[budget]
train_examples = 4

[[methods]]
kind = "copy"

[[methods]]
kind = "gold"

[[evaluators]]
kind = "match"
"""
