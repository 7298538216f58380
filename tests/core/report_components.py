"""Small real components whose runs give the HTML report something in every section.

The toy plugin's echo teacher and lookup-table student (toy_components.py) do the model work; this plugin adds
a dataset, two methods that log a training history the way the training engine does (``log_history.jsonl``
per training stage, budget metrics in ``stage.json``), a lion-like method with per-iteration dynamics and a
pseudo-target mix, and two evaluators with per-sample prompt, reference, prediction and score.
"""

import json
import math
import random
import sys
import types
from pathlib import Path

from pydantic import Field

from stillroom import (
    ComponentConfig,
    EvalResult,
    Evaluator,
    EvaluatorConfig,
    GenerationRequest,
    Generator,
    Method,
    MethodConfig,
    MetricValue,
    hookimpl,
    read_jsonl,
    write_json_atomic,
)

ITEMS = 40


class NumberWords(Generator):
    """Prompts 'say n' with targets 'SAY N'; the test split repeats the training prompts (the student memorises)."""

    name = "number_words"

    class Config(ComponentConfig):
        size: int = Field(ITEMS, description="records per split")
        wordy: bool = Field(False, description="prompts and answers as long as the quickstart's (~70 characters)")

    def build_dataset(self):
        tail = ", then say it again and stop; no more than that please" if self.config.wordy else ""
        rows = [{"id": f"q{i:03d}", "prompt": f"say {i}{tail}", "target": f"SAY {i}{tail}".upper()}
                for i in range(self.config.size)]
        return {"train": rows, "test": rows}


def _write_history(folder: Path, steps: int, rate: float, seed: int) -> None:
    jitter = random.Random(seed)
    with (folder / "log_history.jsonl").open("w") as out:
        for step in range(1, steps + 1):
            loss = 2.5 * math.exp(-rate * step) + 0.05 * jitter.random()
            out.write(json.dumps({"step": step, "loss": round(loss, 5), "learning_rate": 0.01}) + "\n")


def _budget(records: int, steps: int) -> dict:
    tokens = records * 12 * steps
    return {"optimizer_steps": steps, "train_sequences": records * steps, "train_tokens": tokens,
            "flops_estimate": 6 * 60_000 * tokens, "teacher_forward_tokens": 0, "student_generated_tokens": 0}


class Memorise(Method):
    """Asks the teacher for a seeded share of the training targets and memorises them."""

    name = "memorise"

    class Config(MethodConfig):
        share: float = Field(0.5, description="share of the training prompts learned")
        rate: float = Field(0.05, description="how fast the logged loss falls")

    def run(self, job):
        train = job.data["train"]
        chosen = random.Random(job.seed).sample(train, int(len(train) * self.config.share))

        def ask():
            answers = job.teacher.generate([GenerationRequest(prompt=r["prompt"]) for r in chosen])
            return [{**r, "target": a[0].text} for r, a in zip(chosen, answers)]

        records = job.jsonl_stage("teacher_answers", ask)

        def fit(student, folder):
            student.fit(records)
            _write_history(folder, 60, self.config.rate, job.seed)
            return _budget(len(records), 60)

        return job.model_stage("train", fit)


class Rounds(Method):
    """Three rounds of learning more prompts; per-round dynamics like lion's and a pseudo-target mix."""

    name = "rounds"
    uses_teacher = False

    class Config(MethodConfig):
        pass

    def run(self, job):
        train, student, rows = job.data["train"], None, []
        for k in (1, 2, 3):
            def fit(learner, folder, known=train[: 8 * k], k=k):
                learner.fit(known)
                _write_history(folder, 20, 0.1 * k, job.seed)
                return {**_budget(len(known), 20), "student_steps": 5 * k, "fallback_steps": 1}

            student = job.model_stage(f"iter{k}/train", fit)
            rows.append({"iteration": k, "train_pool": 8 * k, "cache_pool": 40 - 8 * k, "hard_fraction": 0.6 / k,
                         "mean_d": 1750.0 / k, "heldout": 0.2 * k, "calls_referee": 0, "cost": 0.0})
        write_json_atomic(job.stage_path() / "dynamics.json", {"iterations": rows})
        job.info["iterations"] = rows
        return student


def _test_split(context):
    return read_jsonl(Path(context.run_dir) / "stages" / "data" / "test.jsonl")


class Recall(Evaluator):
    """Exact match on the test split, with prompt, reference and prediction per sample."""

    name = "recall"

    class Config(EvaluatorConfig):
        pass

    def evaluate(self, subject):
        test = _test_split(self.context)
        answers = subject.generate([GenerationRequest(prompt=r["prompt"]) for r in test])
        samples = [{"id": r["id"], "prompt": r["prompt"], "reference": r["target"], "prediction": a[0].text,
                    "correct": a[0].text == r["target"]} for r, a in zip(test, answers)]
        value = sum(s["correct"] for s in samples) / len(samples)
        stderr = math.sqrt(value * (1 - value) / len(samples))
        return EvalResult(metrics=[MetricValue(metric="acc", value=value, n=len(samples), stderr=stderr)],
                          samples=samples)


class Overlap(Evaluator):
    """Share of the reference's characters the prediction starts with (a graded score per sample)."""

    name = "overlap"

    class Config(EvaluatorConfig):
        pass

    def evaluate(self, subject):
        test = _test_split(self.context)
        answers = subject.generate([GenerationRequest(prompt=r["prompt"]) for r in test])
        samples = []
        for r, a in zip(test, answers):
            text = a[0].text
            shared = next((i for i, (x, y) in enumerate(zip(text, r["target"])) if x != y), min(len(text), len(r["target"])))
            samples.append({"id": r["id"], "prompt": r["prompt"], "reference": r["target"], "prediction": text,
                            "score": shared / len(r["target"])})
        value = sum(s["score"] for s in samples) / len(samples)
        return EvalResult(metrics=[MetricValue(metric="overlap", value=value, n=len(samples))], samples=samples)


reportkit = types.ModuleType("reportkit_plugin")
reportkit.stillroom_register_generators = hookimpl(lambda register: register(NumberWords))
reportkit.stillroom_register_methods = hookimpl(lambda register: (register(Memorise), register(Rounds)))
reportkit.stillroom_register_evaluators = hookimpl(lambda register: (register(Recall), register(Overlap)))
sys.modules.setdefault("reportkit_plugin", reportkit)

REPORT_SPEC = """
name = "rep"
seed = 0
{seeds}

[endpoints.up]
kind = "echo"

[teacher]
kind = "echo"
endpoint = "up"

[student]
kind = "table"

[data]
kind = "number_words"

[[methods]]
kind = "memorise"
label = "half"
share = 0.5

[[methods]]
kind = "memorise"
label = "most"
share = 0.9
rate = 0.12

[[methods]]
kind = "rounds"

[[evaluators]]
kind = "recall"

[[evaluators]]
kind = "overlap"
"""
