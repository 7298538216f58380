"""Few-shot chain-of-thought prompts for rationale extraction, the parser for teacher answers, and label
comparison (equations by value, text labels after normalisation).

The default exemplars (``exemplars.json``) and templates are our own text: the paper's rationale prompts
were never released. Nothing here calls a model.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stillroom import ComponentConfig, UserError

Task = Literal["generic", "svamp", "cqa", "anli1", "esnli"]
DEFAULT_EXEMPLARS = Path(__file__).with_name("exemplars.json")
_EXEMPLAR_SET = {"generic": "generic", "svamp": "svamp", "cqa": "cqa", "anli1": "nli", "esnli": "nli"}


class Exemplar(BaseModel):
    """One worked example shown to the teacher: a problem, its rationale and its label."""

    model_config = ConfigDict(extra="forbid")
    input: str = Field(description="the problem text, as the student will see it")
    rationale: str = Field(description="the step-by-step reasoning that leads to the label")
    label: str = Field(description="the final answer")


class PromptOptions(ComponentConfig):
    """How rationales are asked for and read back: exemplars, templates, answer marker, sampling."""

    task: Task = Field("generic", description="which default exemplars to use and how labels are compared "
                                              "(svamp: equations by value; others: normalised text)")
    exemplars: list[Exemplar] | None = Field(None, description="inline few-shot exemplars; overrides the defaults "
                                                           "([]: zero-shot, the problem alone)")
    exemplars_file: str | None = Field(None, description="a JSON list or JSON Lines file of exemplars "
                                                         "{input, rationale, label}; overrides the defaults")
    exemplar_template: str = Field("Q: {input}\nA: {rationale} {marker} {label}.",
                                   description="how one exemplar is written; fields {input} {rationale} {marker} {label}")
    query_template: str = Field("Q: {input}\nA:", description="how the problem to answer is written; field {input}")
    instruction: str = Field("", description="text placed before the exemplars (empty: none)")
    separator: str = Field("\n\n", description="text between exemplars and before the query")
    answer_marker: str = Field("So the answer is", description="the phrase between rationale and label "
                                                               "(matched case-insensitively, last occurrence)")
    stop: list[str] = Field(default_factory=lambda: ["\nQ:"], description="the answer is cut at the first of these "
                                                                          "(the teacher running on into a new example)")
    max_tokens: int = Field(256, ge=1, description="most tokens the teacher may write per answer")
    temperature: float = Field(0.0, ge=0, description="teacher sampling temperature")
    as_chat: bool = Field(False, description="send the few-shot prompt as one user chat message instead of a raw prompt")


@dataclass
class ParsedAnswer:
    """What a teacher answer gives: rationale and label, or why it could not be read."""

    rationale: str | None
    label: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def load_exemplars(options: PromptOptions) -> list[Exemplar]:
    """The exemplars the options select: inline (an empty list: zero-shot, for a teacher that answers step by
    step on its own), then a file, then our defaults for the task."""
    if options.exemplars is not None:
        return list(options.exemplars)
    if options.exemplars_file:
        return read_exemplars_file(Path(options.exemplars_file))
    return [Exemplar(**row) for row in _default_exemplars()[_EXEMPLAR_SET[options.task]]]


@lru_cache(maxsize=1)
def _default_exemplars() -> dict[str, list[dict]]:
    return json.loads(DEFAULT_EXEMPLARS.read_text())


def read_exemplars_file(path: Path) -> list[Exemplar]:
    """Exemplars from a JSON list or JSON Lines file; problems are reported as ``file:line``."""
    if not path.is_file():
        raise UserError("no such exemplars file", str(path))
    text = path.read_text(encoding="utf-8")
    rows: list[tuple[int, object]] = []
    if text.lstrip().startswith("["):
        try:
            rows = [(1, row) for row in json.loads(text)]
        except json.JSONDecodeError as exc:
            raise UserError(f"malformed JSON: {exc.msg}", f"{path}:{exc.lineno}") from None
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise UserError(f"malformed JSON line: {exc.msg}", f"{path}:{number}") from None
    exemplars = []
    for number, row in rows:
        try:
            exemplars.append(Exemplar.model_validate(row))
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
            raise UserError(f"not an exemplar ({problem})", f"{path}:{number}") from None
    if not exemplars:
        raise UserError("no exemplars in file", str(path))
    return exemplars


def build_prompt(options: PromptOptions, exemplars: list[Exemplar], problem: str) -> str:
    """The few-shot prompt for one problem."""
    shots = [options.exemplar_template.format(input=e.input, rationale=e.rationale.strip(),
                                              marker=options.answer_marker, label=e.label) for e in exemplars]
    parts = ([options.instruction] if options.instruction else []) + shots
    parts.append(options.query_template.format(input=problem))
    return options.separator.join(parts)


_OPTION_MARKER = re.compile(r"^\(\s*[a-zA-Z]\s*\)\s*")


def parse_answer(text: str, options: PromptOptions) -> ParsedAnswer:
    """Split a teacher answer into rationale and label: cut at the first stop string, split at the last
    answer marker, drop a leading ``(x)`` option marker and a trailing full stop from the label."""
    if not isinstance(text, str) or not text.strip():
        return ParsedAnswer(None, None, "empty answer")
    for stop in options.stop:
        if stop:
            text = text.split(stop, 1)[0]
    marker = options.answer_marker.lower()
    at = text.lower().rfind(marker) if marker else -1
    if at < 0:
        return ParsedAnswer(None, None, f"no answer marker {options.answer_marker!r}")
    rationale = text[:at].strip()
    label = text[at + len(marker):].strip().split("\n", 1)[0].strip()
    label = _OPTION_MARKER.sub("", label).rstrip().removesuffix(".").strip()
    if label.startswith(":"):
        label = label[1:].strip()
    if not rationale:
        return ParsedAnswer(None, label or None, "empty rationale")
    if not label:
        return ParsedAnswer(rationale, None, "empty label")
    return ParsedAnswer(rationale, label)


# ---------------------------------------------------------------------------------------------------------
# Label comparison.

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def equation_value(text: str | None) -> float | None:
    """The value of an arithmetic expression such as ``( 84.0 / 2.0 )``; None when it is not one.
    Only numbers, + - * / and parentheses are accepted (no ``eval``)."""
    if not text or not text.strip():
        return None
    try:
        tree = ast.parse(text.strip().replace("×", "*").replace("÷", "/"), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def value(node) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        raise ValueError("not arithmetic")

    try:
        result = value(tree.body)
    except (ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return result if math.isfinite(result) else None


def normalise_text_label(text: str | None) -> str:
    """Lower case, inner whitespace collapsed, surrounding quotes and a trailing full stop removed."""
    text = " ".join((text or "").split()).lower().strip().strip("\"'").strip()
    return text.removesuffix(".").strip()


def labels_match(task: str, predicted: str | None, gold: str | None) -> bool:
    """Whether two labels agree: equations (svamp) by value; elsewhere by value when both are numbers,
    otherwise as normalised text."""
    a_value, b_value = equation_value(predicted), equation_value(gold)
    if task == "svamp" or (a_value is not None and b_value is not None):
        return (a_value is not None and b_value is not None
                and math.isclose(a_value, b_value, rel_tol=1e-9, abs_tol=1e-9))
    a = normalise_text_label(predicted)
    return bool(a) and a == normalise_text_label(gold)


def upstream_labels_match(task: str, predicted: str | None, gold: str | None) -> bool:
    """The reference code's comparison: equations (svamp) by value, other labels as exact strings.
    (The reference evaluates equations with Python ``eval``; ``equation_value`` accepts arithmetic only.)"""
    if task == "svamp":
        return labels_match(task, predicted, gold)
    return bool(predicted) and predicted == gold
