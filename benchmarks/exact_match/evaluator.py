"""The ``exact_match`` evaluator: greedy answers to a split of problems, scored by the extracted final
number (accuracy with a Wilson interval) and by ROUGE-L of the reasoning against the gold rationale.

Where the problems come from: by default, the run's own data stage (``<run dir>/stages/data/<split>.jsonl``),
so the evaluator scores exactly the held-out records the run's methods were kept away from and a spec states
its data once. Outside a run, or to score another task, ``data`` names a generator (``{kind = "arithmetic",
...}``) that the evaluator builds itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from stillroom import (ComponentRef, EvalResult, Evaluator, EvaluatorConfig, GenerationRequest, MetricValue,
                       RewardScorer, RunDirectory, Subject, UserError, read_jsonl)

from stillroom.benchmarks.exact_match.scoring import (extract_answer, mean_and_stderr, normalize_number,
                                                      split_rationale, wilson_interval)


class ExactMatchConfig(EvaluatorConfig):
    """Options of the exact_match evaluator."""

    data: ComponentRef("generator") | None = Field(
        None, description="a generator whose split is scored (a kind or a table with kind); default: the "
                          "run's own data stage")
    split: str = Field("test", description="which split of the data to score")
    limit: int | None = Field(None, ge=1, description="score only the first N records of the split")
    max_tokens: int | None = Field(None, ge=1, le=4096,
                                   description="longest answer generated; default: the longest gold target "
                                               "in characters plus 16 (enough for any tokenizer)")
    answer_prefix: str = Field("answer is", min_length=1,
                               description="the phrase the final answer follows (matched case-insensitively)")
    system_prompt: str | None = Field(None, description="a system message sent before each problem")
    rouge: bool = Field(True, description="also report rationale_rougeL when the records have a 'rationale'")


class ExactMatch(Evaluator, RewardScorer):
    """Accuracy of the final number a model gives (95% Wilson interval) and ROUGE-L of its reasoning."""

    name = "exact_match"
    Config = ExactMatchConfig

    def records(self) -> list[dict[str, Any]]:
        """The records to score: the configured generator's split, or the run's data stage."""
        cfg = self.config
        if cfg.data is not None:
            options = {k: v for k, v in cfg.data.items() if k != "kind"}
            generator = self.context.build("generator", cfg.data["kind"], **options)
            splits = generator.build_dataset()
            where = "evaluators.exact_match.data"
        else:
            if self.context.run_dir is None:
                raise UserError("no data to score: outside a run, give the evaluator a 'data' generator",
                                "evaluators.exact_match.data")
            folder = RunDirectory(Path(self.context.run_dir)).stage_path("data")
            splits = {p.stem: read_jsonl(p) for p in sorted(folder.glob("*.jsonl"))}
            where = str(folder)
        if cfg.split not in splits:
            raise UserError(f"no split {cfg.split!r}; available: {', '.join(sorted(splits)) or 'none'}",
                            f"{where} (evaluators.exact_match.split)")
        rows = splits[cfg.split][:cfg.limit] if cfg.limit else splits[cfg.split]
        if not rows:
            raise UserError(f"split {cfg.split!r} is empty", where)
        for index, row in enumerate(rows):
            if "prompt" not in row and "messages" not in row:
                raise UserError("record has neither 'prompt' nor 'messages'", f"{where}: {cfg.split} record {index}")
            if row.get("answer") is None and row.get("target") is None:
                raise UserError("record has neither 'answer' nor 'target'", f"{where}: {cfg.split} record {index}")
        return rows

    def gold(self, reference: str) -> str | None:
        """The canonical answer of a reference: the reference itself when it is a number (a record's 'answer'),
        else the number its text gives (a full gold 'target')."""
        return normalize_number(reference) or extract_answer(reference, self.config.answer_prefix)

    def reward(self, prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
        """1.0 when a completion's extracted final number equals its reference's, else 0.0 (also when either
        holds no number): the same rule as the exact_match metric, one completion at a time."""
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        rewards = []
        for completion, reference in zip(completions, references):
            gold = self.gold(str(reference)) if reference is not None else None
            extracted = extract_answer(completion, self.config.answer_prefix)
            rewards.append(1.0 if gold is not None and extracted == gold else 0.0)
        return rewards

    def request(self, row: dict[str, Any], max_tokens: int) -> GenerationRequest:
        messages = list(row.get("messages") or [{"role": "user", "content": str(row["prompt"])}])
        if self.config.system_prompt:
            messages = [{"role": "system", "content": self.config.system_prompt}, *messages]
        return GenerationRequest(messages=messages, max_tokens=max_tokens, temperature=0.0)

    def evaluate(self, subject: Subject) -> EvalResult:
        cfg = self.config
        rows = self.records()
        max_tokens = cfg.max_tokens or min(4096, max(len(str(r.get("target") or r.get("answer"))) for r in rows) + 16)
        answers = subject.generate([self.request(row, max_tokens) for row in rows],
                                   description=f"exact_match {subject.name}")
        use_rouge = cfg.rouge and all(r.get("rationale") for r in rows)
        scorer = None
        if use_rouge:
            from rouge_score import rouge_scorer

            scorer = rouge_scorer.RougeScorer(["rougeL"])
        samples, correct, rouge_values = [], 0, []
        for index, (row, completions) in enumerate(zip(rows, answers)):
            prediction = completions[0].text if completions else ""
            gold = normalize_number(str(row["answer"])) if row.get("answer") is not None else \
                extract_answer(str(row["target"]), cfg.answer_prefix)
            extracted = extract_answer(prediction, cfg.answer_prefix)
            hit = extracted is not None and extracted == gold
            correct += hit
            sample = {"id": row.get("id", index), "prompt": row.get("prompt"), "prediction": prediction,
                      "extracted": extracted, "gold": gold, "correct": hit}
            if scorer is not None:
                score = scorer.score(str(row["rationale"]), split_rationale(prediction, cfg.answer_prefix))
                sample["rationale_rougeL"] = score["rougeL"].fmeasure
                rouge_values.append(score["rougeL"].fmeasure)
            samples.append(sample)
        n = len(rows)
        accuracy = correct / n
        low, high = wilson_interval(correct, n)
        metrics = [MetricValue(metric="exact_match", value=accuracy, n=n,
                               stderr=(accuracy * (1 - accuracy) / n) ** 0.5, ci_low=low, ci_high=high)]
        if rouge_values:
            mean, stderr = mean_and_stderr(rouge_values)
            half = 1.96 * stderr if stderr is not None else None
            metrics.append(MetricValue(metric="rationale_rougeL", value=mean, n=n, stderr=stderr,
                                       ci_low=mean - half if half is not None else None,
                                       ci_high=mean + half if half is not None else None))
        return EvalResult(metrics=metrics, samples=samples,
                          details={"split": cfg.split, "max_tokens": max_tokens, "correct": correct,
                                   "answer_prefix": cfg.answer_prefix})
