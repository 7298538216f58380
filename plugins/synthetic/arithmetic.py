"""The ``arithmetic`` generator: procedurally drawn multi-step arithmetic problems with a gold step-by-step
rationale and a short gold answer.

A problem's split is decided by a hash of its expression, not by the draw: a fixed share of all possible
problems is test-only, the rest train-only. So no seed, size or later teacher training run can put a test
problem on the training side, and the quickstart teacher (trained on the train side) is really held out.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Iterator

from stillroom import Dataset, Generator, UserError

from stillroom.plugins.synthetic.config import ArithmeticConfig, ArithmeticTask

ANSWER_PREFIX = "The answer is"
TEST_SHARE = 0.1
"""Share of all possible problems reserved for test splits. Fixed, so the quickstart teacher (trained on the
other side) never saw any test problem a generator can produce."""
VALIDATION_SHARE = 0.1
"""The next share, reserved for validation splits (choices such as a method's options are made there, never
on the test split): disjoint from test and train for every seed and size."""
SHARES = {"test": TEST_SHARE, "validation": VALIDATION_SHARE, "train": 1 - TEST_SHARE - VALIDATION_SHARE}

# Word-problem templates: one opening line, then one clause per operation.
_NAMES = ["Ada", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kemi", "Luis"]
_THINGS = ["apples", "marbles", "stamps", "coins", "books", "shells", "pencils", "stickers"]
_CLAUSES = {
    "+": "{who} gets {n} more.",
    "-": "{who} gives away {n}.",
    "*": "{who} ends up with {n} times as many.",
}


@dataclass(frozen=True)
class Problem:
    """One problem: the first operand, then (operator, operand) pairs applied left to right."""

    first: int
    steps: tuple[tuple[str, int], ...]

    def expression(self) -> str:
        """The expression, parenthesised so that left-to-right evaluation is also the usual precedence."""
        text = str(self.first)
        previous = None
        for operator, operand in self.steps:
            if operator == "*" and previous in ("+", "-"):
                text = f"({text})"
            text = f"{text}{operator}{operand}"
            previous = operator
        return text

    def values(self) -> list[int]:
        """The running result after each operation."""
        out, value = [], self.first
        for operator, operand in self.steps:
            value = value + operand if operator == "+" else value - operand if operator == "-" else value * operand
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def rationale(self) -> str:
        """One equation per operation: ``23+45=68. 68-12=56.``"""
        parts, value = [], self.first
        for (operator, operand), result in zip(self.steps, self.values()):
            parts.append(f"{value}{operator}{operand}={result}.")
            value = result
        return " ".join(parts)

    def target(self) -> str:
        return f"{self.rationale()} {ANSWER_PREFIX} {self.answer}."

    def prompt(self, story: random.Random | None = None) -> str:
        """``What is 23+45-12?``, or a short story when ``story`` (a seeded RNG for names and things) is given."""
        if story is None:
            return f"What is {self.expression()}?"
        who, things = story.choice(_NAMES), story.choice(_THINGS)
        lines = [f"{who} has {self.first} {things}."]
        lines += [_CLAUSES[operator].format(who=f"Then {who}" if i else who, n=operand)
                  for i, (operator, operand) in enumerate(self.steps)]
        lines.append(f"How many {things} does {who} have now?")
        return " ".join(lines)


def split_of(problem: Problem) -> str:
    """``"test"`` or ``"validation"`` for the fixed shares of problems reserved for evaluation and for
    choices, else ``"train"``."""
    digest = hashlib.sha256(problem.expression().encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if position < TEST_SHARE else "validation" if position < TEST_SHARE + VALIDATION_SHARE else "train"


def draw_problem(rng: random.Random, task: ArithmeticTask) -> Problem:
    """One problem from ``task``; redrawn while a result goes below zero unless negatives are allowed."""
    while True:
        first = rng.randint(task.min_operand, task.max_operand)
        steps = []
        for _ in range(task.operations):
            operator = rng.choice(task.operators)
            high = task.max_multiplier if operator == "*" else task.max_operand
            steps.append((operator, rng.randint(min(task.min_operand, high), high)))
        problem = Problem(first, tuple(steps))
        if task.allow_negative or min(problem.values()) >= 0:
            return problem


def problem_space(task: ArithmeticTask) -> int:
    """How many distinct expressions the task can produce (an upper bound: negatives are not subtracted)."""
    operands = task.max_operand - task.min_operand + 1
    per_step = sum(task.max_multiplier - min(task.min_operand, task.max_multiplier) + 1 if op == "*" else operands
                   for op in set(task.operators))
    return operands * per_step ** task.operations


def stream(task: ArithmeticTask, split: str, seed: int) -> Iterator[Problem]:
    """An endless, deterministic stream of problems from one side of the split (repeats possible)."""
    rng = random.Random(f"arithmetic:{split}:{seed}")
    while True:
        problem = draw_problem(rng, task)
        if split_of(problem) == split:
            yield problem


def record(problem: Problem, split: str, index: int, story: random.Random | None,
           task: ArithmeticTask | None = None) -> dict[str, Any]:
    out = {"id": f"arithmetic-{split}-{index:05d}", "prompt": problem.prompt(story), "target": problem.target(),
           "answer": str(problem.answer), "rationale": problem.rationale(), "expression": problem.expression()}
    if task is not None:
        # the task it was drawn from, so a component that writes new problems from these (Lion's offline
        # instruction writer) takes its ranges from the data and cannot drift from it
        out["difficulty"] = task.model_dump(mode="json", include=DIFFICULTY_FIELDS)
    return out


DIFFICULTY_FIELDS = {"operations", "operators", "min_operand", "max_operand", "max_multiplier", "allow_negative"}


def draw_split(task: ArithmeticTask, split: str, size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` distinct problems from one side of the split, as records."""
    share = SHARES[split]
    available = int(problem_space(task) * share * 0.5)  # negatives and hash luck shrink the space; stay clear
    if size > available:
        raise UserError(f"cannot draw {size} distinct {split} problems: this difficulty has only about "
                        f"{available} on the {split} side; raise max_operand or operations, or lower the size",
                        f"data.{split}_size")
    problems = stream(task, split, seed)
    story = random.Random(f"arithmetic:story:{split}:{seed}")
    seen: set[str] = set()
    rows = []
    while len(rows) < size:
        problem = next(problems)
        if problem.expression() in seen:
            continue
        seen.add(problem.expression())
        phrased = story if task.word_problems and story.random() < task.word_problems else None
        rows.append(record(problem, split, len(rows), phrased, task))
    return rows


class ArithmeticGenerator(Generator):
    """Multi-step arithmetic problems (like 23+45-12) with a step-by-step gold rationale and answer."""

    name = "arithmetic"
    Config = ArithmeticConfig

    @property
    def seed(self) -> int:
        return self.config.seed if self.config.seed is not None else self.context.seed

    def build_dataset(self) -> Dataset:
        cfg = self.config
        sizes = [("train", cfg.train_size), ("test", cfg.test_size)]
        if cfg.validation_size:  # only when asked for, so existing datasets (and their checksums) stay as they were
            sizes.append(("validation", cfg.validation_size))
        return {split: draw_split(cfg.difficulty, split, size, self.seed) for split, size in sizes}
