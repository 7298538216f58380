"""stillroom: distil large language models into small ones and compare the results on a leaderboard.

Plugins import public names from here only: ``from stillroom import hookimpl, Teacher, ...``.
"""

from stillroom import paths
from stillroom.hookspecs import hookimpl
from stillroom.leaderboard import OutputRenderer, RenderOptions
from stillroom.plugin_manager import build, get_host
from stillroom.roles import (
    BudgetExceeded,
    Completion,
    Component,
    ComponentConfig,
    Context,
    Dataset,
    Endpoint,
    EvalResult,
    Evaluator,
    EvaluatorConfig,
    GenerationRequest,
    Generator,
    InstructionWriter,
    Job,
    Judge,
    JudgeItem,
    Judgment,
    Loss,
    Method,
    MethodConfig,
    MetricValue,
    RewardScorer,
    Student,
    Subject,
    Teacher,
    TextScorer,
    TokenLogprob,
    UserError,
    suggest,
)
from stillroom.rundir import RunDirectory, read_jsonl, write_json_atomic, write_jsonl_atomic
from stillroom.specs import ComponentRef, EndpointRef
from stillroom.training import MethodJob

__all__ = [
    "BudgetExceeded", "Completion", "Component", "ComponentConfig", "ComponentRef", "Context", "Dataset", "Endpoint",
    "EndpointRef", "EvalResult", "Evaluator", "EvaluatorConfig", "GenerationRequest", "Generator", "Judge",
    "JudgeItem", "Judgment", "Loss", "Method", "MethodConfig", "MethodJob", "MetricValue", "RunDirectory", "Student",
    "RewardScorer", "Subject", "Teacher", "TextScorer", "TokenLogprob", "UserError", "build", "paths", "suggest",
    "get_host", "hookimpl", "read_jsonl",
    "write_json_atomic", "write_jsonl_atomic", "InstructionWriter", "Job", "OutputRenderer", "RenderOptions",
]
