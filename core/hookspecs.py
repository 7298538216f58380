"""The contract between stillroom's core and its plugins.

Every hook is named ``stillroom_*``. Registration hooks receive a ``register`` callback and call it once per
class they provide; observer hooks are told about a run's progress. This module defines the contract only:
it must not import a plugin, a benchmark or anything heavy (the annotations name core types lazily).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import typer

    from stillroom.leaderboard import OutputRenderer
    from stillroom.roles import Endpoint, Evaluator, Generator, Judge, Loss, Method, Student, Teacher
    from stillroom.runs import Run

hookspec = pluggy.HookspecMarker("stillroom")
hookimpl = pluggy.HookimplMarker("stillroom")


@hookspec
def stillroom_register_endpoints(register: Callable[[type[Endpoint]], None]) -> None:
    """Register Endpoint classes: ways to talk to a language model (in-process transformers, an
    OpenAI-compatible API, ...). Call ``register(EndpointClass)`` once per class."""


@hookspec
def stillroom_register_teachers(register: Callable[[type[Teacher]], None]) -> None:
    """Register Teacher classes: models that answer prompts for a method; some also give token logprobs
    or full logits. Call ``register(TeacherClass)`` once per class."""


@hookspec
def stillroom_register_students(register: Callable[[type[Student]], None]) -> None:
    """Register Student classes: a trainable model and tokenizer that can generate and be saved.
    Call ``register(StudentClass)`` once per class."""


@hookspec
def stillroom_register_judges(register: Callable[[type[Judge]], None]) -> None:
    """Register Judge classes: components that score or compare answers (LLM-as-judge, rule-based).
    Call ``register(JudgeClass)`` once per class."""


@hookspec
def stillroom_register_generators(register: Callable[[type[Generator]], None]) -> None:
    """Register data Generator classes: datasets, instruction synthesis, rationale extraction, synthetic
    tasks. Call ``register(GeneratorClass)`` once per class."""


@hookspec
def stillroom_register_losses(register: Callable[[type[Loss]], None]) -> None:
    """Register Loss classes: distillation objectives over student and teacher logits (CE, KL, JSD, ...).
    Call ``register(LossClass)`` once per class."""


@hookspec
def stillroom_register_evaluators(register: Callable[[type[Evaluator]], None]) -> None:
    """Register Evaluator classes: benchmarks and metrics that score a model under test.
    Call ``register(EvaluatorClass)`` once per class."""


@hookspec
def stillroom_register_methods(register: Callable[[type[Method]], None]) -> None:
    """Register Method classes: distillation recipes that orchestrate the roles in stages.
    Call ``register(MethodClass)`` once per class."""


@hookspec
def stillroom_register_output_renderers(register: Callable[[OutputRenderer], None]) -> None:
    """Register output formats of ``stillroom leaderboard --format``: call ``register(OutputRenderer(...))`` once
    per format (its name, a one-line description, terminal/stdout/file, file extension, and ``render(rows,
    options)`` returning text or bytes). The built-in table, md, csv, json and html are ``trylast`` defaults."""


@hookspec
def stillroom_register_commands(cli: typer.Typer) -> None:
    """Add sub-commands to the ``stillroom`` command line; ``cli`` is the root ``typer.Typer`` app."""


@hookspec
def stillroom_run_started(run: Run) -> None:
    """Observe the start of a run; ``run`` is the ``Run`` being executed (its directory, spec and id)."""


@hookspec
def stillroom_stage_finished(run: Run, stage: str, metrics: dict[str, Any]) -> None:
    """Observe the end of a stage: ``stage`` is its name, ``metrics`` a dict of what it measured."""


@hookspec
def stillroom_run_finished(run: Run, results: list[dict[str, Any]]) -> None:
    """Observe the end of a run: ``results`` is the list of leaderboard rows the run wrote."""
