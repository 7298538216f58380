"""Offline stand-ins for the two LLM roles of Lion on the quickstart's arithmetic task.

* ``arithmetic_referee`` (a judge): scores each answer 1-10 from the correctness of its final answer and the
  quality of its step-by-step rationale, the way an LLM referee would score (teacher, student) pairs.
* ``arithmetic_variations`` (an instruction generator): writes new problems from seed problems — for a hard
  seed one with the same operators and operands of the same size (same task type and difficulty), for an
  easy seed one with the same number of operations but re-drawn operators (same domain, a rarer mix) — and
  computes their gold answers.

Both read the problem formats of the ``arithmetic`` data generator (plugins/synthetic): ``What is 23+45-12?``
(parenthesised so that left-to-right is also the usual precedence, e.g. ``(23+45)*3``) and short stories
(``Ada has 5 apples. Ada gets 3 more. Then Ada gives away 2. How many apples does Ada have now?``); answers
are ``23+45=68. 68-12=56. The answer is 56.``. Nothing here imports that plugin: the formats are read as text.
"""

from __future__ import annotations

import ast
import hashlib
import operator
import random
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from stillroom import ComponentConfig, Dataset, Generator, InstructionWriter, Judge, JudgeItem, Judgment, UserError

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
EXPRESSION = re.compile(r"what is\s+([0-9+\-*() ]+?)\s*\?", re.IGNORECASE)
STORY_START = re.compile(r"^\s*(?P<who>[A-Z][\w'-]*) has (?P<n>\d+) (?P<things>[\w-]+)\.")
STORY_CLAUSES = [
    (re.compile(r"^(?:Then )?(?P<who>[A-Z][\w'-]*) gets (?P<n>\d+) more\.$"), "+"),
    (re.compile(r"^(?:Then )?(?P<who>[A-Z][\w'-]*) gives away (?P<n>\d+)\.$"), "-"),
    (re.compile(r"^(?:Then )?(?P<who>[A-Z][\w'-]*) ends up with (?P<n>\d+) times as many\.$"), "*"),
]
STORY_WORDS = {"+": "{who} gets {n} more.", "-": "{who} gives away {n}.", "*": "{who} ends up with {n} times as many."}
EQUATION = re.compile(r"(-?\d+)\s*([+\-*x×])\s*(\d+)\s*=\s*(-?\d+)")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
STATED = re.compile(r"answer is\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """A problem as a first operand and (operator, operand) steps applied left to right, with its phrasing."""

    first: int
    steps: tuple[tuple[str, int], ...]
    story: tuple[str, str] | None = None  # (who, things) for word problems

    def values(self) -> list[int]:
        out, value = [], self.first
        for op, operand in self.steps:
            value = OPS[op](value, operand)
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1] if self.steps else self.first

    def chain(self) -> list[tuple[int, str, int, int]]:
        """The expected equations ``(left, op, right, result)`` of a step-by-step rationale."""
        out, value = [], self.first
        for (op, operand), result in zip(self.steps, self.values()):
            out.append((value, op, operand, result))
            value = result
        return out

    def expression(self) -> str:
        text, previous = str(self.first), None
        for op, operand in self.steps:
            if op == "*" and previous in ("+", "-"):
                text = f"({text})"
            text = f"{text}{op}{operand}"
            previous = op
        return text

    def prompt(self) -> str:
        if self.story is None:
            return f"What is {self.expression()}?"
        who, things = self.story
        lines = [f"{who} has {self.first} {things}."]
        lines += [STORY_WORDS[op].format(who=f"Then {who}" if i else who, n=n) for i, (op, n) in enumerate(self.steps)]
        lines.append(f"How many {things} does {who} have now?")
        return " ".join(lines)

    def rationale(self) -> str:
        return " ".join(f"{a}{op}{b}={c}." for a, op, b, c in self.chain())

    def target(self) -> str:
        return f"{self.rationale()} The answer is {self.answer}."


def _evaluate(node: ast.AST) -> int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult):
        left, right = _evaluate(node.left), _evaluate(node.right)
        return left + right if isinstance(node.op, ast.Add) else left - right if isinstance(node.op, ast.Sub) else left * right
    raise ValueError("not a +, -, * expression of integers")


def parse_expression(text: str) -> tuple[Problem, int] | None:
    """A ``+ - *`` expression as a left-to-right problem and its true value (None when not such an expression
    or when the parentheses make left-to-right disagree with the true value)."""
    try:
        value = _evaluate(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, RecursionError):
        return None
    tokens = re.findall(r"\d+|[+\-*]", text.replace("(", " ").replace(")", " "))
    if not tokens or not tokens[0].isdigit() or len(tokens) % 2 == 0:
        return None
    steps = tuple((tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2))
    if any(op not in OPS or not isinstance(n, int) for op, n in steps):
        return None
    problem = Problem(int(tokens[0]), steps)
    return (problem, value) if problem.answer == value else None


def parse_story(text: str) -> Problem | None:
    """A word problem in the synthetic task's phrasing, or None."""
    start = STORY_START.match(text)
    if not start:
        return None
    who, things = start.group("who"), start.group("things")
    rest = text[start.end():].strip()
    question = f"How many {things} does {who} have now?"
    if not rest.endswith(question):
        return None
    body = rest[: -len(question)].strip()
    sentences = [s.strip() + "." for s in body.split(".") if s.strip()]
    steps = []
    for sentence in sentences:
        for pattern, op in STORY_CLAUSES:
            match = pattern.match(sentence)
            if match and match.group("who") == who:
                steps.append((op, int(match.group("n"))))
                break
        else:
            return None
    return Problem(int(start.group("n")), tuple(steps), (who, things)) if steps else None


def parse_problem(text: str) -> Problem | None:
    """The problem a prompt states (an expression question or a word problem), or None."""
    match = EXPRESSION.search(text)
    if match:
        parsed = parse_expression(match.group(1))
        return parsed[0] if parsed else None
    return parse_story(text)


def stated_answer(text: str) -> str | None:
    """The final answer in a response: the number after the last "answer is", else the last number."""
    stated = STATED.findall(text)
    if stated:
        return _canonical(stated[-1])
    numbers = NUMBER.findall(text)
    return _canonical(numbers[-1]) if numbers else None


def _canonical(number: str) -> str:
    if re.fullmatch(r"-?\d+", number):
        return str(int(number))
    value = float(number)
    return str(int(value)) if value.is_integer() else str(value)


def score_answer(answer: str, gold: str | None, chain: list[tuple[int, str, int, int]] | None) -> tuple[float, dict]:
    """A 1-10 score: 1 + 5 for the right final answer + 2 x the share of the expected steps shown + 1 x the
    share of the shown equations that are true + 1 for stating "The answer is N"."""
    equations = [(int(a), "*" if op in "x×" else op, int(b), int(c)) for a, op, b, c in EQUATION.findall(answer)]
    true_share = sum(OPS[op](a, b) == c for a, op, b, c in equations) / len(equations) if equations else 0.0
    if chain:
        shown = set(equations)
        step_share = sum(step in shown for step in chain) / len(chain)
    else:
        step_share = true_share
    final = stated_answer(answer)
    correct = gold is not None and final == gold
    stated = bool(STATED.search(answer))
    score = 1 + 5 * correct + 2 * step_share + 1 * true_share + 1 * stated
    return round(score, 4), {"final": final, "correct": correct, "step_share": round(step_share, 4),
                             "true_share": round(true_share, 4), "stated": stated}


class ArithmeticReferee(Judge):
    """Scores arithmetic answers 1-10 from final-answer correctness and the step-by-step rationale (offline)."""

    name = "arithmetic_referee"

    class Config(ComponentConfig):
        use_reference: bool = Field(True, description="trust an item's reference answer when it has one; the gold "
                                                      "answer is otherwise computed from the problem itself")

    def judge(self, items: list[JudgeItem]) -> list[Judgment]:
        out = []
        for item in items:
            problem = parse_problem(item.question)
            gold = None
            if self.config.use_reference and item.reference is not None:
                gold = stated_answer(item.reference)
            if gold is None and problem is not None:
                gold = str(problem.answer)
            if gold is None:
                out.append(Judgment(scores=[-1.0] * len(item.answers), failed=True,
                                    details={"error": "not an arithmetic problem this referee can read"}))
                continue
            chain = problem.chain() if problem is not None else None
            scored = [score_answer(answer, gold, chain) for answer in item.answers]
            out.append(Judgment(scores=[s for s, _ in scored],
                                raw=[f"gold {gold}; " + ", ".join(f"{k}={v}" for k, v in d.items()) for _, d in scored],
                                details={"gold": gold, "answers": [d for _, d in scored]}))
        return out


# ---------------------------------------------------------------------------------------------------------
# The instruction generator.


def _digits_range(n: int) -> tuple[int, int]:
    """Operands of the same size as ``n``: 0-9 for one digit, 10-99 for two, ..."""
    digits = len(str(abs(n)))
    return (0, 9) if digits == 1 else (10 ** (digits - 1), 10 ** digits - 1)


@dataclass(frozen=True)
class Ranges:
    """The data's difficulty as far as a variation needs it: which operators, which operands."""

    operators: tuple[str, ...]
    min_operand: int
    max_operand: int
    max_multiplier: int
    allow_negative: bool

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> "Ranges | None":
        """The ranges a record states (the ``arithmetic`` generator writes its difficulty into every record),
        or None when it states none."""
        task = record.get("difficulty")
        if not isinstance(task, dict):
            return None
        try:
            operators = tuple(op for op in task["operators"] if op in OPS)
            return cls(operators or ("+",), int(task["min_operand"]), int(task["max_operand"]),
                       int(task.get("max_multiplier", 9)), bool(task.get("allow_negative", False)))
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def of_problems(cls, problems: list[Problem]) -> "Ranges":
        """The narrowest ranges holding every problem given (for data that does not state its difficulty)."""
        plain = [p.first for p in problems] + [n for p in problems for op, n in p.steps if op != "*"]
        factors = [n for p in problems for op, n in p.steps if op == "*"]
        operators = tuple(sorted({op for p in problems for op, _ in p.steps})) or ("+",)
        return cls(operators, min(plain or [0]), max(plain or [0]), max(factors or [0]),
                   any(v < 0 for p in problems for v in p.values()))

    def operand(self, rng: random.Random, op: str, like: int | None) -> int:
        """An operand for ``op`` inside these ranges; of the same number of digits as ``like`` where the
        ranges hold such numbers."""
        if op == "*":
            return rng.randint(min(self.min_operand, self.max_multiplier), self.max_multiplier)
        low, high = self.min_operand, self.max_operand
        if like is not None:
            size_low, size_high = _digits_range(like)
            if max(low, size_low) <= min(high, size_high):
                low, high = max(low, size_low), min(high, size_high)
        return rng.randint(low, high)


class ArithmeticVariations(Generator, InstructionWriter):
    """Writes new arithmetic problems from seed problems (same operators and operand sizes for hard seeds,
    re-drawn operators for easy ones), with gold answers; used as Lion's instruction generator offline.

    Operators and operand ranges come from the data itself, never from an option of this writer: a seed
    record's ``difficulty`` (what the ``arithmetic`` generator used), else the ranges of all seeds asked
    about in the same call. So a variation never leaves the task the teacher and the test split come from."""

    name = "arithmetic_variations"

    class Config(ComponentConfig):
        redraws: int = Field(50, ge=1, description="draws tried per candidate before it is given up as invalid")

    def build_dataset(self) -> Dataset:
        raise UserError("arithmetic_variations writes new instructions from seeds inside the lion method; it "
                        "cannot be a spec's [data] (use kind = 'arithmetic' there)", "data.kind")

    def _vary(self, seed: Problem, mode: str, rng: random.Random, ranges: Ranges) -> Problem | None:
        for _ in range(self.config.redraws):
            if mode == "hard":
                first = ranges.operand(rng, "+", seed.first)
                steps = tuple((op, ranges.operand(rng, op, n)) for op, n in seed.steps)
            else:
                choices = list(ranges.operators)
                ops = [rng.choice(choices) for _ in seed.steps]
                if len(set(choices)) > 1 and ops == [op for op, _ in seed.steps]:
                    i = rng.randrange(len(ops))
                    ops[i] = rng.choice([op for op in choices if op != ops[i]])
                first = ranges.operand(rng, "+", None)
                steps = tuple((op, ranges.operand(rng, op, None)) for op in ops)
            problem = Problem(first, steps, seed.story)
            if ranges.allow_negative or min(problem.values() or [0]) >= 0:
                return problem
        return None

    def propose(self, asks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One candidate per ask ``{"seed": pool record, "mode": "hard"|"easy", "key": unique draw key}``."""
        out = []
        parsed = [parse_problem(str(ask["seed"]["prompt"])) for ask in asks]
        observed = None
        for ask, seed in zip(asks, parsed):
            seed_text = str(ask["seed"]["prompt"])
            ranges = Ranges.of_record(ask["seed"])
            if ranges is None and seed is not None:
                observed = observed or Ranges.of_problems([p for p in parsed if p is not None])
                ranges = observed
            rng = random.Random(int.from_bytes(hashlib.sha256(str(ask["key"]).encode()).digest()[:8], "big"))
            base = {"seed_id": ask["seed"].get("id"), "seed_prompt": seed_text, "mode": ask["mode"]}
            if seed is None:
                out.append({**base, "prompt": "", "rejected": "seed is not an arithmetic problem"})
                continue
            problem = self._vary(seed, ask["mode"], rng, ranges)
            if problem is None:
                out.append({**base, "prompt": "", "rejected": f"no valid variation in {self.config.redraws} draws"})
                continue
            written = {**base, "prompt": problem.prompt(), "answer": str(problem.answer),
                       "rationale": problem.rationale(), "target": problem.target(),
                       "expression": problem.expression()}
            if isinstance(ask["seed"].get("difficulty"), dict):
                written["difficulty"] = ask["seed"]["difficulty"]  # a new problem is of the seed's task
            out.append(written)
        return out

    def rejects(self, candidate: dict[str, Any], avoid: set[str]) -> str | None:
        """Why a candidate is discarded: a problem of the test split (same expression), else None."""
        if candidate.get("expression") in avoid:
            return "a test-split problem"
        return None

    def avoid_keys(self, records: list[dict[str, Any]]) -> set[str]:
        """The expressions of ``records`` (held-out problems a new problem must not repeat)."""
        keys = set()
        for row in records:
            if row.get("expression"):
                keys.add(str(row["expression"]))
                continue
            problem = parse_problem(str(row.get("prompt", "")))
            if problem is not None:
                keys.add(problem.expression())
        return keys
