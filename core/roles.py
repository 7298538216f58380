"""The contract every component meets: the base classes plugin authors subclass, one per role, the small data
types the roles exchange, the ``Context`` a component is built with and the ``UserError`` it raises.

A component class carries ``name`` (the ``kind`` a spec uses), a nested pydantic ``Config`` whose fields are
its options, and a one-sentence docstring. Everything the core or one plugin calls on another component is
declared here, typed; the hooks that register components are ``core/hookspecs.py``. This module holds
interfaces and plain data only; the work happens in the core's other modules and in plugins.
"""

from __future__ import annotations

import abc
import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from stillroom.cache import CallCache
    from stillroom.rundir import RunDirectory
    from stillroom.specs import Budget


# ---------------------------------------------------------------------------------------------------------
# Errors a user can fix: printed as one ``location: message`` line, exit code 2, no traceback. Anything else is a
# bug in our code (or a plugin's) and keeps its traceback; ``STILLROOM_RAISE_ERRORS=1`` re-raises handled errors
# too, for debugging.


class UserError(Exception):
    """An error the user can fix; the CLI prints ``location: message`` and exits 2."""

    def __init__(self, message: str, location: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.lines = [str(self)]  # the error as printed, one item per line (a spec error names several)

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class BudgetExceeded(UserError):
    """A call or cost budget would be exceeded; the run stops cleanly before it is."""


def suggest(name: str, candidates) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------------------------------------------------
# What every component is built with.


_DEFAULT = object()


class Context:
    """What a component can reach while it works: the call cache, the spec's named endpoints, the seed, the run
    directory and the local data mirror. Components get one at construction; ``build`` makes a default one."""

    def __init__(self, *, cache: "CallCache | None | object" = _DEFAULT, endpoints: "dict[str, Endpoint] | None" = None,
                 seed: int = 0, run_dir: Path | None = None, data_root: Path | None | object = _DEFAULT,
                 progress: bool = True):
        from stillroom import paths  # not at the top: paths raises this module's UserError

        self._cache = cache
        self.endpoints: dict[str, Endpoint] = endpoints if endpoints is not None else {}
        self.seed = seed
        self.run_dir = run_dir
        self.data_root = paths.data_root() if data_root is _DEFAULT else data_root
        self.progress = progress

    @property
    def cache(self) -> "CallCache | None":
        if self._cache is _DEFAULT:
            from stillroom import paths
            from stillroom.cache import CallCache

            self._cache = CallCache(paths.cache_dir() / "calls.sqlite")
        return self._cache  # type: ignore[return-value]

    def endpoint(self, name: str, location: str = "endpoint") -> "Endpoint":
        if name not in self.endpoints:
            raise UserError(f"no endpoint named {name!r}{suggest(name, self.endpoints)}; "
                            f"defined: {', '.join(sorted(self.endpoints)) or 'none'}", location)
        return self.endpoints[name]

    def build(self, role: str, kind: str, **config: Any) -> "Component":
        """Build another component with this context (how plugins meet without importing each other)."""
        from stillroom.plugin_manager import build

        return build(role, kind, context=self, **config)

    def data_path(self, *parts: str) -> Path | None:
        """A path inside the local data mirror, or None when no mirror is configured."""
        return self.data_root.joinpath(*parts) if self.data_root else None


class ComponentConfig(BaseModel):
    """Base of every component's ``Config``: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Component(abc.ABC):
    """Base of every plugin class. Subclasses set ``name`` and usually a nested ``Config``."""

    role: ClassVar[str] = ""
    name: ClassVar[str] = ""

    class Config(ComponentConfig):
        pass

    def __init__(self, config: ComponentConfig | None = None, context: "Context | None" = None):
        self.config = config if config is not None else self.Config()
        self.context = context if context is not None else Context()

    def __repr__(self) -> str:
        return f"<{self.role} {self.name!r}>"

    def source_files(self) -> list:
        """Data files this component reads; their checksums go into the run manifest."""
        return []


# ---------------------------------------------------------------------------------------------------------
# Generation: what every endpoint takes and returns.


class GenerationRequest(BaseModel):
    """One generation call: chat ``messages`` or a raw ``prompt``, plus sampling parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0

    def describe(self) -> str:
        """A short, secret-free description for error messages."""
        text = self.prompt if self.prompt is not None else (self.messages or [{}])[-1].get("content", "")
        text = text.replace("\n", " ")
        return repr(text[:60] + ("..." if len(text) > 60 else ""))


class TokenLogprob(BaseModel):
    """A generated token, its logprob, and the top alternatives at that position as (token, logprob)."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = Field(default_factory=list)


class Completion(BaseModel):
    """One sampled answer to a request."""

    text: str
    finish_reason: str | None = None
    tokens: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Endpoint(Component):
    """A way to talk to a language model. Subclasses implement ``identity`` and ``_generate``;
    ``generate`` adds the call cache, accounting and the budget."""

    role = "endpoint"
    # How many requests the default ``_generate_streaming`` hands ``_generate`` at once (in-process batches).
    chunk_size: ClassVar[int] = 64

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What makes two endpoints give the same answers (model id, weights hash, server URL...).
        It keys the call cache, so it must not contain secrets."""

    @abc.abstractmethod
    def _generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """Answer each request with ``request.n`` completions, in order. Called on cache misses only."""

    def _generate_streaming(self, requests: list[GenerationRequest],
                            deliver: Callable[[int, list[Completion]], None]) -> None:
        """Answer requests, calling ``deliver(i, completions)`` for ``requests[i]`` as each answer arrives (any
        order), so the call cache stores it at once. The default calls ``_generate`` on chunks of
        ``chunk_size`` requests; an endpoint that talks to a server overrides it with
        ``stillroom.calls.stream_pool`` to keep requests in flight without a barrier between chunks."""
        from stillroom.calls import generate_in_chunks

        generate_in_chunks(self, requests, deliver)

    def generate(self, requests: list[GenerationRequest], *, description: str | None = None) -> list[list[Completion]]:
        """Answer requests through the call cache; only misses reach ``_generate``."""
        from stillroom.calls import generate_through_cache

        return generate_through_cache(self, list(requests), description=description)

    # Prompt scoring (issue 19): the log-prob a model gives every token of a given text, with its top-k
    # alternatives, as `stillroom serve` answers `echo` + `logprobs` and vLLM `prompt_logprobs`.
    can_score: ClassVar[bool] = False

    def score(self, sequences: list[list[int]], top_k: int) -> list[tuple[Any, Any]]:
        """Score token sequences: per sequence, numpy ``(indices int32, logprobs float32)`` of shape
        (len, ``top_k``) where row i holds the ``top_k`` most likely tokens at position i given the tokens before
        it, with log-probs normalised over the whole vocabulary (row 0 has no context: indices -1, log-probs
        -inf; so do missing alternatives). Token ids are the model's own vocabulary. Endpoints that set
        ``can_score`` implement it; the others raise a UserError."""
        raise UserError(f"endpoint kind {self.name!r} cannot score prompts (no prompt log-probs)", "endpoint")

    @property
    def stats(self) -> dict[str, float]:
        """Calls, cache hits, tokens, retries and cost so far."""
        if not hasattr(self, "_stats"):
            self._stats = {
                "requests": 0,
                "cache_hits": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cached_tokens": 0,  # prompt + completion tokens of answers served from the call cache
                "retries": 0,
                "cost": 0.0,
            }
        return self._stats


# ---------------------------------------------------------------------------------------------------------
# The six roles and methods.


class Teacher(Component):
    """A model that answers prompts for a method. ``endpoint`` does the talking; a white-box teacher (a local
    transformers model, kind ``hf``) also exposes ``model`` and ``tokenizer``, for methods that read its full
    logits or run its ``model.generate`` (``white_box`` says which kind a teacher is)."""

    role = "teacher"
    endpoint: Endpoint
    """The endpoint every generation call goes through (its counters are what the teacher costs)."""
    model: PreTrainedModel | None = None
    """A white-box teacher's transformers model (full next-token logits); None for a teacher behind an API."""
    tokenizer: PreTrainedTokenizerBase | None = None
    """A white-box teacher's tokenizer (with ``model``); None for a teacher behind an API."""
    path: str | Path | None = None
    """Where a local teacher's weights live (a folder or a hub id), for evaluators that load it; None otherwise."""

    @property
    def white_box(self) -> bool:
        """Whether the teacher exposes its ``model`` and ``tokenizer`` (the checks a white-box method makes on
        top of this are ``stillroom.training.white_box_teacher``, ``causal_models`` and ``same_vocabulary``)."""
        return self.model is not None and self.tokenizer is not None

    def generate(self, requests: list[GenerationRequest], *, description: str | None = None) -> list[list[Completion]]:
        return self.endpoint.generate(requests, description=description or f"teacher {self.name}")

    def score_targets(self, sequences: list[list[int]], top_k: int) -> list[tuple[Any, Any]]:
        """The teacher's top-k log-probs at every position of given token sequences (gold targets, its own
        generations, another model's outputs), as :meth:`Endpoint.score`; what a teacher-signal capture
        stores."""
        return self.endpoint.score(sequences, top_k)

    def signal_identity(self) -> dict[str, Any]:
        """What decides the teacher's scores (it keys teacher-signal captures): the endpoint's identity."""
        return self.endpoint.identity()


class Student(Component):
    """A trainable model and tokenizer that can generate, be saved and be loaded."""

    role = "student"
    model: PreTrainedModel | None = None
    """The transformers model methods train in place (None for a student that is no transformers model)."""
    tokenizer: PreTrainedTokenizerBase | None = None
    """The model's tokenizer (None with ``model``)."""
    path: str | Path | None = None
    """Where exactly these weights live on disk (a folder or a hub id), for evaluators that load the model
    themselves; None for fresh random weights or weights trained since they were loaded."""
    is_encoder_decoder: bool = False
    """Whether the model is an encoder-decoder (T5-style: the prompt is encoded, the target decoded) rather than
    a causal language model (prompt and target form one sequence)."""
    endpoint: Endpoint | None = None
    """The endpoint ``generate`` answers through (its counters are what the student's generation costs), or
    None when it makes no model calls of its own."""

    @abc.abstractmethod
    def fresh(self) -> "Student":
        """A new student with the initial weights, so every method starts from the same point."""

    @abc.abstractmethod
    def save(self, path) -> None:
        """Save weights and tokenizer to the folder ``path`` so ``load`` can restore them."""

    @abc.abstractmethod
    def load(self, path) -> "Student":
        """A student of this kind with the weights saved at ``path``."""

    @abc.abstractmethod
    def generate(self, requests: list[GenerationRequest], *, description: str | None = None) -> list[list[Completion]]:
        """Answer requests with the current weights (through the call cache)."""

    def encode_example(self, record: dict[str, Any], *, max_length: int = 512,
                       location: str = "record") -> tuple[list[int], list[int], float]:
        """``(input ids, labels, weight)`` of one training record ({prompt or messages, target, optional weight})
        exactly as ``fit`` trains on it: labels are -100 outside the target. Methods that pair the training
        tokens with stored teacher signals (logit_kd) encode through it so both see the same tokens."""
        raise UserError(f"student kind {self.name!r} cannot encode training examples", location)

    def fit(self, records: list[dict[str, Any]], *, steps: int, batch_size: int, learning_rate: float, seed: int,
            max_length: int = 512, warmup_ratio: float = 0.0, weight_decay: float = 0.0,
            folder: Any = None, checkpoint_dir: Any = None, checkpoint_steps: int | None = None,
            report_to: str | list[str] = "none", description: str = "training",
            continue_from: Any = None, total_steps: int | None = None,
            keep_state: Any = None) -> dict[str, Any]:
        """Supervised fine-tuning through the training engine (``stillroom.training``) on ``records``
        ({prompt or messages, target, optional weight}); the loss covers target tokens only.

        ``steps``/``batch_size``/``learning_rate``: the optimizer steps, global batch and peak learning rate
        (AdamW, linear warm-up over ``warmup_ratio`` of the steps, linear decay); ``seed`` seeds every
        generator and the data order. ``folder`` receives ``log_history.jsonl``; ``checkpoint_dir`` and
        ``checkpoint_steps`` turn on mid-stage checkpoints, and a complete checkpoint found there is resumed
        from. ``continue_from`` (a folder a previous ``keep_state`` wrote) carries the optimizer state and
        learning-rate schedule over from an earlier fit, whose schedule spans ``total_steps``; ``keep_state``
        names a folder to write this fit's final optimizer state to. Returns the stage metrics
        (``optimizer_steps``, ``train_sequences``, ``train_tokens``, ..., ``wall_seconds``, ``train_loss``)."""
        raise UserError(f"student kind {self.name!r} cannot be fine-tuned (it has no fit)", "student")


class JudgeItem(BaseModel):
    """What a judge looks at: a question, one or two answers, optionally a reference answer."""

    question: str
    answers: list[str]
    reference: str | None = None
    category: str | None = None
    id: str | None = None
    turns: list[str] | None = None
    """Multi-turn items: every user turn in order (``question`` is then the last one)."""
    answer_turns: list[list[str]] | None = None
    """Multi-turn items: per answer, the assistant's reply to every turn (``answers`` holds the last replies)."""
    reference_turns: list[str] | None = None
    """Multi-turn items: a reference reply for every turn."""


class Judgment(BaseModel):
    """A judge's decision: scores (one per answer), or a verdict ('A', 'B', 'tie'), and the raw texts."""

    scores: list[float] | None = None
    verdict: str | None = None
    raw: list[str] = Field(default_factory=list)
    failed: bool = False
    position_conflict: bool | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class Judge(Component):
    """Scores or compares answers."""

    role = "judge"
    calibration: str = "none"
    """What the judge does itself against position bias: 'none', or a combination of 'bpc' (it judges both
    answer orders and averages) and 'mec' (it samples several evaluations), such as 'mec+bpc'. A method that
    swaps the answer orders itself (lion) needs a judge without 'bpc'."""
    endpoint: Endpoint | None = None
    """The endpoint the judgments are asked through (its counters are what judging costs), or None for a rule
    that needs no model."""

    @abc.abstractmethod
    def judge(self, items: list[JudgeItem]) -> list[Judgment]:
        """One judgment per item, in order; unparseable judgments come back with ``failed`` set."""

    def describe(self) -> dict[str, Any]:
        """What this judge is, for evaluators' result details (never secrets); by default its kind."""
        return {"kind": self.name}


Dataset = dict[str, list[dict[str, Any]]]
"""Splits (``train``, ``test``, ...) of records. Records carry ``id`` and ``prompt``; supervised ones also
``target`` (the full gold response) and, where the task has them, ``answer`` and ``rationale``."""


class Generator(Component):
    """Produces data: a dataset, synthesised instructions, extracted rationales, a synthetic task."""

    role = "generator"

    @abc.abstractmethod
    def build_dataset(self) -> Dataset:
        """The records of every split."""


class Loss(Component):
    """A distillation objective over (batch, time, vocab) logits; positions labelled -100 are ignored."""

    role = "loss"

    @abc.abstractmethod
    def __call__(self, student_logits, teacher_logits=None, labels=None):
        """A scalar loss tensor."""

    @property
    def temperature(self) -> float:
        """The softmax temperature the loss divides both logit tensors by (1.0 for a loss that has none);
        methods that scale the loss by its square (Hinton et al.'s T^2) read it."""
        return 1.0


class MetricValue(BaseModel):
    """One number an evaluator reports, with its sample size and uncertainty."""

    metric: str
    value: float
    n: int
    stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    higher_is_better: bool = True


class EvalResult(BaseModel):
    """An evaluator's output: metrics plus per-sample records (kept in the run directory)."""

    metrics: list[MetricValue]
    samples: list[dict[str, Any]] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class Subject:
    """The model under test handed to an evaluator: a name, a way to generate, and, for local models,
    the transformers model and tokenizer (and path) for log-likelihood work."""

    def __init__(self, name: str, generate, *, role: str = "student", model=None, tokenizer=None, path=None, endpoint=None):
        self.name = name
        self.generate = generate
        self.role = role
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.endpoint = endpoint

    @classmethod
    def of(cls, component: Teacher | Student | Endpoint, name: str, role: str) -> "Subject":
        """The subject of a teacher or a student (what their roles declare), or of an endpoint alone (a server
        to generate through)."""
        if isinstance(component, Endpoint):
            return cls(name, component.generate, role=role, endpoint=component)
        return cls(name, component.generate, role=role, model=component.model, tokenizer=component.tokenizer,
                   path=component.path, endpoint=component.endpoint)


class EvaluatorConfig(ComponentConfig):
    """Base of every evaluator's Config."""

    label: str | None = Field(None, description="name of this evaluator on the leaderboard (default: the kind)")


class Evaluator(Component):
    """A benchmark or metric that scores a model under test."""

    role = "evaluator"

    class Config(EvaluatorConfig):
        pass

    @abc.abstractmethod
    def evaluate(self, subject: Subject) -> EvalResult:
        """Metrics and per-sample records for ``subject``."""


class TextScorer(abc.ABC):
    """An evaluator that can score given texts against references, without a model to generate them
    (``stillroom eval --predictions``). Mixed into an Evaluator subclass: ``class Rouge(Evaluator, TextScorer)``."""

    @abc.abstractmethod
    def score_texts(self, predictions: list[str], references) -> EvalResult:
        """Score ``predictions`` against one reference each (a string) or several (a list of strings)."""


class RewardScorer(abc.ABC):
    """An evaluator or judge that can score one completion at a time, so a method can use it as a reward
    (exact-match correctness, ROUGE against a reference, an LLM judge's single-answer grade). Mixed into the
    component's role class: ``class ExactMatch(Evaluator, RewardScorer)``; a spec names it like any component
    (``reward = {kind = "exact_match"}``)."""

    @abc.abstractmethod
    def reward(self, prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
        """One reward per completion, higher is better, in order. ``prompts[i]`` is the question
        ``completions[i]`` answers and ``references[i]`` its gold answer or target (None when there is none).
        A completion that cannot be scored gets the scorer's lowest reward, never an exception."""

    def reward_endpoint(self) -> Endpoint | None:
        """The endpoint the rewards are computed through (its calls and tokens are what rewarding costs, and go
        through the call cache), or None for a rule that needs no model."""
        return None


class InstructionWriter(abc.ABC):
    """A data generator that writes new instructions from seed instructions (the generator role of Lion-style
    methods, which call exactly these three methods). Mixed into a Generator subclass:
    ``class LionLLMInstructions(Generator, InstructionWriter)``."""

    @abc.abstractmethod
    def propose(self, asks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One candidate record per ask ``{"seed": pool record, "mode": "hard" | "easy", "key": unique draw
        key}``, in order: ``prompt`` (the new instruction; empty, with a ``rejected`` reason, when none could be
        written), ``seed_id``, ``seed_prompt``, ``mode``, and whatever else the writer knows (a gold answer)."""

    @abc.abstractmethod
    def rejects(self, candidate: dict[str, Any], avoid: set[str]) -> str | None:
        """Why ``candidate`` is discarded (the writer's post-filters; a key in ``avoid``), or None to keep it."""

    @abc.abstractmethod
    def avoid_keys(self, records: list[dict[str, Any]]) -> set[str]:
        """The keys of ``records`` (held-out instructions) that a new instruction must not repeat."""

    def writer_endpoint(self) -> Endpoint | None:
        """The endpoint the instructions are written through (its calls and tokens are what writing costs), or
        None for a rule that needs no model."""
        return None


@runtime_checkable
class Job(Protocol):
    """What a method's ``run`` gets (the core's ``MethodJob`` implements it): the roles, the data, the shared
    budget, and resumable stages under the entry's own folder. Stage names are relative to the entry."""

    label: str  # the entry's name on the leaderboard
    method: Component
    teacher: Teacher | None  # None when the method does not use a teacher
    student: Student  # a fresh copy of the spec's student
    data: dict[str, list[dict[str, Any]]]  # split -> records
    budget: Budget
    seed: int  # this entry's seed
    seeded: bool  # whether the run trains several seeds (the seed is then part of every stage path)
    run_dir: RunDirectory
    context: Context
    info: dict[str, Any]  # what the method reports besides metrics (kept with the entry's leaderboard rows)

    @property
    def prefix(self) -> str:
        """This entry's stage folder, relative to the run's ``stages/``."""

    def stage_path(self, name: str = "") -> Path:
        """The folder of this entry's stage ``name`` (of the entry itself when empty)."""

    def stage_metrics(self, name: str) -> dict[str, Any]:
        """The recorded metrics of this entry's finished stage ``name`` ({} when it has not finished)."""

    def stage_seed(self, name: str) -> int:
        """The seed of stage ``name``, from the entry's seed and the stage's name."""

    def checkpoint_dir(self, name: str) -> Path:
        """A folder for mid-stage checkpoints of stage ``name`` that survives a killed stage."""

    def train_records(self) -> list[dict[str, Any]]:
        """The budget's training problems: the same ids for every method and seed."""

    def stage(self, name: str, produce: Callable[[Path], dict | None]) -> Path:
        """Run ``produce(folder)`` once (skipped when finished before); it may return metrics to record."""

    def jsonl_stage(self, name: str, compute: Callable[[], list[dict]]) -> list[dict]:
        """Records computed once and kept as JSON lines."""

    def model_stage(self, name: str, train: Callable[[Student, Path], dict | None]) -> Student:
        """Train the student once in a stage (``train(student, folder)``) and return it, loaded back on resume."""

    def evaluate(self, model: Student, evaluator: Evaluator, stage: str, *, name: str) -> list[MetricValue]:
        """Score ``model`` (named ``name`` in the samples) with ``evaluator`` once, in stage ``stage``, which keeps
        ``samples.jsonl`` and ``result.json`` exactly as the leaderboard's own evaluations do; returns the metrics
        (read back from the stage on resume)."""


class MethodConfig(ComponentConfig):
    """Base of every method's Config."""

    label: str | None = Field(None, description="name of this entry on the leaderboard (default: the kind); "
                                                "needed when one method appears twice with other options")


class Method(Component):
    """A distillation recipe: runs as stages over a teacher, a fresh student and data, returns the trained
    student. ``uses_teacher`` says whether it needs the spec's teacher; ``baseline`` whether it is a baseline
    other methods are compared with."""

    role = "method"
    uses_teacher: ClassVar[bool] = True
    # A baseline (sft, seqkd) is what other methods are compared with: a spec's default `reference` is its
    # first baseline entry.
    baseline: ClassVar[bool] = False

    class Config(MethodConfig):
        pass

    @abc.abstractmethod
    def run(self, job: Job) -> Student:
        """Train ``job.student`` (a fresh copy) and return the result; use ``job.stage`` for resumable steps."""


ROLES: dict[str, type[Component]] = {
    "endpoint": Endpoint,
    "teacher": Teacher,
    "student": Student,
    "judge": Judge,
    "generator": Generator,
    "loss": Loss,
    "evaluator": Evaluator,
    "method": Method,
}
