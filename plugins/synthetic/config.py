"""Configuration models of the synthetic plugin: the arithmetic task's difficulty, the generator, and the
quickstart teacher and student.

The task options live in one model (``ArithmeticTask``) shared by the generator and the teacher, so the
teacher is trained on exactly the task the run's data comes from (and its cache key changes with it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stillroom import ComponentConfig


class ArithmeticTask(ComponentConfig):
    """What the problems look like: how many operations, which operators, which operands, which phrasing."""

    operations: int = Field(2, ge=1, le=6, description="operations per problem: 2 gives problems like a+b-c")
    operators: list[Literal["+", "-", "*"]] = Field(
        default_factory=lambda: ["+", "-"], min_length=1,
        description="operators drawn uniformly for each operation; '*' takes a small second operand "
                    "(see max_multiplier)")
    min_operand: int = Field(0, ge=0, description="smallest operand")
    max_operand: int = Field(99, ge=1, le=100_000, description="largest operand")
    max_multiplier: int = Field(9, ge=1, le=1000, description="largest right-hand operand of a '*' operation")
    allow_negative: bool = Field(False, description="allow intermediate and final results below zero; "
                                                    "when false such problems are redrawn")
    word_problems: float = Field(0.0, ge=0.0, le=1.0, description="fraction of problems phrased as a short "
                                                                  "story instead of an expression")

    @model_validator(mode="after")
    def _check_range(self):
        if self.min_operand > self.max_operand:
            raise ValueError(f"min_operand ({self.min_operand}) is larger than max_operand ({self.max_operand})")
        return self


class ArithmeticConfig(ComponentConfig):
    """Options of the ``arithmetic`` generator."""

    train_size: int = Field(2000, ge=0, description="training problems")
    test_size: int = Field(300, ge=0, description="held-out problems (the quickstart uses at least 200)")
    validation_size: int = Field(0, ge=0, description="problems of a 'validation' split, disjoint from train and "
                                                      "test, for choices (tuning, early stopping); 0: no such split")
    seed: int | None = Field(None, description="seed of the problem draw; default: the run's seed")
    difficulty: ArithmeticTask = Field(default_factory=ArithmeticTask, description="what the problems look like")


class TinyModelShape(ComponentConfig):
    """The shape of a tiny Llama over the character tokenizer."""

    layers: int = Field(2, ge=1, le=12, description="transformer layers")
    hidden: int = Field(64, ge=8, le=1024, description="hidden width (must divide by heads)")
    heads: int = Field(4, ge=1, le=32, description="attention heads")
    intermediate: int | None = Field(None, ge=8, description="MLP width; default: twice the hidden width")

    @model_validator(mode="after")
    def _check_heads(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class TrainingRun(ComponentConfig):
    """One first-use training run of a tiny quickstart model through the training engine (then cached):
    ``steps x batch_size`` examples drawn fresh in order, a held-out check after it."""

    steps: int = Field(1500, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="examples per step, freshly drawn (many small steps beat big "
                                                  "ones for models this small)")
    learning_rate: float = Field(3e-3, gt=0, description="peak AdamW learning rate (the engine's linear warm-up and decay)")
    warmup_steps: int = Field(50, ge=0, description="steps of linear learning-rate warm-up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    seed: int = Field(0, description="seed of initialisation and of the examples drawn")
    eval_size: int = Field(300, ge=0, description="held-out examples scored after training (recorded in the cache "
                                                  "folder's training.json)")


class TeacherTraining(TrainingRun):
    """How the quickstart teacher is trained the first time it is used (then it is loaded from the cache).

    Measured on 2 idle cores, one thread: 1,500 steps of 32 take ~50 s and reach 0.97 held-out exact match on
    the quickstart's task (two operations, operands 0-20). On the wider 0-99 task 4,000 steps of 32 reach only
    0.12: the loss drop comes late there, so the quickstart uses the smaller operands."""


class QuickstartTeacherConfig(ComponentConfig):
    """Options of the ``quickstart`` teacher."""

    task: ArithmeticTask = Field(default_factory=ArithmeticTask,
                                 description="the task the teacher learns; keep it equal to the data's difficulty")
    shape: TinyModelShape = Field(default_factory=lambda: TinyModelShape(layers=2, hidden=64, heads=4),
                                  description="the teacher's architecture")
    training: TeacherTraining = Field(default_factory=TeacherTraining, description="the first-use training run")
    threads: int | None = Field(None, ge=1, description="torch CPU threads while training; default: the current "
                                                      "setting (`stillroom quickstart` uses 1)")
    batch_size: int = Field(64, ge=1, description="prompts per generation batch of the hf endpoint")
    device: str = Field("auto", description="device of the hf endpoint: auto, cpu, cuda, mps")


def _generic_corpus() -> "ArithmeticTask":
    # Single-operation sums and differences of numbers 0-60: every intermediate step of a two-operation problem
    # on 0-20 has this shape, but no two-operation problem (the quickstart's task) is ever in the corpus.
    return ArithmeticTask(operations=1, max_operand=60)


class StudentPretraining(TrainingRun):
    """Pretraining of the quickstart student on generic text of the task's domain, done once and cached: real
    students are pretrained language models, not random weights. Never the task's own training problems."""

    corpus: ArithmeticTask = Field(default_factory=_generic_corpus,
                                   description="what the generic text looks like; default: single-operation "
                                               "facts such as 37+12=49 on operands 0-60 (one operation, so never "
                                               "a problem of a two-operation task)")
    learning_rate: float = Field(1e-2, gt=0, description="peak AdamW learning rate (linear warm-up and decay)")
    seed: int = Field(0, description="seed of the corpus draw (the weights start from the student's seed)")
    eval_size: int = Field(200, ge=0, description="held-out corpus texts scored after pretraining (recorded "
                                                  "in the cache folder's training.json)")

    @model_validator(mode="after")
    def _check_corpus(self):
        if self.corpus.operations > 1:
            raise ValueError("corpus.operations must be 1: the generic corpus holds single facts, so that no "
                             "multi-step task problem is ever pretrained on")
        return self


class QuickstartStudentConfig(ComponentConfig):
    """Options of the ``quickstart`` student."""

    shape: TinyModelShape = Field(default_factory=lambda: TinyModelShape(layers=2, hidden=32, heads=4, intermediate=48),
                                  description="the student's architecture (keep it at least 4x smaller than "
                                              "the teacher)")
    seed: int = Field(0, description="seed of the random initial weights")
    pretraining: StudentPretraining | None = Field(
        None, description="pretrain the student once on generic text of the task's domain (cached with its "
                          "lineage); none: the student starts from random weights")
    batch_size: int = Field(64, ge=1, description="prompts per generation batch")
    device: str = Field("auto", description="device: auto, cpu, cuda, mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weight precision while training and generating ('auto' is float32 on a CPU)")

