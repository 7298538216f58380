"""``rouge`` and ``bleu`` evaluators: a model's generations scored against references of any dataset.

Both read prompts and references from a JSONL file (``data_file``) or, inside a run, from the run's test split
(``stages/data/test.jsonl``, reference = ``target``), generate with the model under test at temperature 0, and
score. ``score_texts(predictions, references)`` (the TextScorer interface) scores texts directly (``stillroom eval
--predictions``); ``rouge`` is also a RewardScorer: one completion's ROUGE against its reference as a reward.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field, field_validator

from stillroom import (EvalResult, Evaluator, EvaluatorConfig, GenerationRequest, MetricValue, RewardScorer, Subject,
                       TextScorer, UserError, read_jsonl)

References = Sequence[str] | Sequence[Sequence[str]]


class TextMetricConfig(EvaluatorConfig):
    """Where the prompts and references come from and how the model generates."""

    data_file: str | None = Field(
        None, description="JSONL with a prompt and a reference per line; default: the run's test split "
                          "(stages/data/test.jsonl, reference field 'target')")
    prompt_field: str = Field("prompt", description="field holding the prompt")
    reference_field: str | None = Field(
        None, description="field holding the reference (a string or a list of strings); default: 'reference' in "
                          "data_file, 'target' in the run's test split")
    id_field: str = Field("id", description="field identifying a record in the samples (optional in the data)")
    chat: bool = Field(True, description="send the prompt as a chat user message (False: as a raw prompt)")
    max_tokens: int = Field(256, ge=1, description="longest generation, in tokens")
    limit: int | None = Field(None, ge=1, description="only the first N records")


def normalise_references(predictions: Sequence[str], references: References) -> list[list[str]]:
    """One list of references per prediction."""
    if len(predictions) != len(references):
        raise UserError(f"{len(predictions)} predictions but {len(references)} references", "references")
    out = []
    for i, ref in enumerate(references):
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise UserError("a reference must be a string or a non-empty list of strings", f"references[{i}]")
        out.append(refs)
    return out


def _stderr(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


class _TextMetric(Evaluator, TextScorer):
    """Shared loading and generation of the text-metric evaluators; subclasses implement ``score_texts``."""

    def records(self) -> tuple[list[dict[str, Any]], str, Path]:
        cfg = self.config
        if cfg.data_file:
            path, reference_field = Path(cfg.data_file).expanduser(), cfg.reference_field or "reference"
        elif self.context.run_dir is not None:
            path = Path(self.context.run_dir) / "stages" / "data" / "test.jsonl"
            reference_field = cfg.reference_field or "target"
        else:
            raise UserError("set data_file (JSONL with prompt and reference fields), or run inside a spec whose data "
                            "has a test split", f"evaluator[{self.name}].data_file")
        if not path.is_file():
            raise UserError("no such file", str(path))
        numbered = read_jsonl(path, numbered=True, limit=cfg.limit, encoding="utf-8")
        for number, row in numbered:
            for name in (cfg.prompt_field, reference_field):
                if name not in row:
                    raise UserError(f"record has no field {name!r}", f"{path}:{number}")
        rows = [row for _, row in numbered]
        if not rows:
            raise UserError("no records", str(path))
        return rows, reference_field, path

    def source_files(self) -> list:
        return [Path(self.config.data_file)] if self.config.data_file else []

    def evaluate(self, subject: Subject) -> EvalResult:
        cfg = self.config
        rows, reference_field, path = self.records()
        requests = [GenerationRequest(messages=[{"role": "user", "content": row[cfg.prompt_field]}], max_tokens=cfg.max_tokens)
                    if cfg.chat else GenerationRequest(prompt=row[cfg.prompt_field], max_tokens=cfg.max_tokens)
                    for row in rows]
        predictions = [c[0].text for c in subject.generate(requests)]
        result = self.score_texts(predictions, [row[reference_field] for row in rows])
        for sample, row in zip(result.samples, rows):
            sample["prompt"] = row[cfg.prompt_field]
            if cfg.id_field in row:
                sample["id"] = row[cfg.id_field]
        result.details.update(subject=subject.name, data=str(path))
        return result


class RougeEvaluator(_TextMetric, RewardScorer):
    """ROUGE-1/2/L/Lsum (rouge-score): the mean of the per-example F-measures, as Hugging Face evaluate reports."""

    name = "rouge"

    class Config(TextMetricConfig):
        rouge_types: list[str] = Field(default_factory=lambda: ["rouge1", "rouge2", "rougeL", "rougeLsum"],
                                       description="rougeN (N = 1..9), rougeL, rougeLsum (newlines separate "
                                                   "sentences)")
        use_stemmer: bool = Field(False, description="Porter-stem tokens longer than 3 characters (off by default, "
                                                     "as in Hugging Face evaluate)")

        @field_validator("rouge_types")
        @classmethod
        def _known(cls, value: list[str]) -> list[str]:
            bad = [t for t in value if not re.fullmatch(r"rouge([1-9]|L|Lsum)", t)]
            if bad:
                raise ValueError(f"unknown ROUGE type(s) {bad}: use rouge1..rouge9, rougeL or rougeLsum")
            if not value:
                raise ValueError("name at least one ROUGE type")
            return value

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        from rouge_score import rouge_scorer

        self.scorer = rouge_scorer.RougeScorer(list(self.config.rouge_types), use_stemmer=self.config.use_stemmer)

    def reward(self, prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
        """The F-measure of the first configured ROUGE type (``rouge_types = ["rouge2"]`` for the GKD paper's
        ROUGE-2) of each completion against its reference; 0.0 without a reference."""
        rouge_type = self.config.rouge_types[0]
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        return [self.scorer.score(reference, completion)[rouge_type].fmeasure if reference is not None else 0.0
                for completion, reference in zip(completions, references)]

    def score_texts(self, predictions: list[str], references: References) -> EvalResult:
        refs = normalise_references(predictions, references)
        samples = []
        for prediction, targets in zip(predictions, refs):
            # rouge-score's argument order is (target, prediction); several references: the best one per type.
            scores = (self.scorer.score(targets[0], prediction) if len(targets) == 1
                      else self.scorer.score_multi(targets, prediction))
            samples.append({"prediction": prediction, "references": targets,
                            **{t: {"precision": s.precision, "recall": s.recall, "fmeasure": s.fmeasure}
                               for t, s in scores.items()}})
        metrics = []
        for rouge_type in self.config.rouge_types:
            values = [s[rouge_type]["fmeasure"] for s in samples]
            metrics.append(MetricValue(metric=rouge_type, value=sum(values) / len(values) if values else 0.0,
                                       n=len(values), stderr=_stderr(values)))
        return EvalResult(metrics=metrics, samples=samples,
                          details={"use_stemmer": self.config.use_stemmer, "aggregate": "mean of per-example F"})


class BleuEvaluator(_TextMetric):
    """Corpus BLEU, chrF and TER (sacrebleu), with bootstrap confidence intervals."""

    name = "bleu"

    class Config(TextMetricConfig):
        metrics: list[Literal["bleu", "chrf", "ter"]] = Field(default_factory=lambda: ["bleu", "chrf", "ter"],
                                                              description="which corpus metrics to report")
        tokenize: str | None = Field(None, description="BLEU tokenizer ('13a' when unset, 'none', 'intl', 'char', "
                                                       "'zh', 'ja-mecab', ...)")
        lowercase: bool = Field(False, description="BLEU and chrF: lowercase before scoring")
        smooth_method: Literal["none", "floor", "add-k", "exp"] = Field("exp", description="BLEU smoothing")
        smooth_value: float | None = Field(None, description="BLEU smoothing value (floor: 0.1, add-k: 1 when unset)")
        max_ngram_order: int = Field(4, ge=1, description="BLEU's largest n-gram order")
        effective_order: bool = Field(False, description="BLEU: ignore n-gram orders without matches (sentence BLEU)")
        chrf_char_order: int = Field(6, ge=1, description="chrF character n-gram order")
        chrf_word_order: int = Field(0, ge=0, description="chrF word n-gram order (2 = chrF++)")
        chrf_beta: int = Field(2, ge=1, description="chrF recall weight")
        chrf_whitespace: bool = Field(False, description="chrF: keep whitespace in character n-grams")
        chrf_eps_smoothing: bool = Field(False, description="chrF: epsilon smoothing (chrF++.py / NLTK behaviour)")
        ter_normalized: bool = Field(False, description="TER: normalise punctuation and tokenise")
        ter_no_punct: bool = Field(False, description="TER: remove punctuation")
        ter_asian_support: bool = Field(False, description="TER: split Asian characters")
        ter_case_sensitive: bool = Field(False, description="TER: case-sensitive")
        bootstrap: int = Field(1000, ge=1, description="bootstrap resamples for the 95% CI (1: none)")

    def _scorers(self) -> dict[str, Any]:
        from sacrebleu.metrics import BLEU, CHRF, TER

        cfg = self.config
        out = {}
        if "bleu" in cfg.metrics:
            out["bleu"] = BLEU(lowercase=cfg.lowercase, tokenize=cfg.tokenize, smooth_method=cfg.smooth_method,
                               smooth_value=cfg.smooth_value, max_ngram_order=cfg.max_ngram_order,
                               effective_order=cfg.effective_order)
        if "chrf" in cfg.metrics:
            out["chrf"] = CHRF(char_order=cfg.chrf_char_order, word_order=cfg.chrf_word_order, beta=cfg.chrf_beta,
                               lowercase=cfg.lowercase, whitespace=cfg.chrf_whitespace,
                               eps_smoothing=cfg.chrf_eps_smoothing)
        if "ter" in cfg.metrics:
            out["ter"] = TER(normalized=cfg.ter_normalized, no_punct=cfg.ter_no_punct,
                             asian_support=cfg.ter_asian_support, case_sensitive=cfg.ter_case_sensitive)
        return out

    def score_texts(self, predictions: list[str], references: References) -> EvalResult:
        refs = normalise_references(predictions, references)
        width = max(len(r) for r in refs) if refs else 1
        # sacrebleu wants reference streams aligned with the predictions; a missing reference is None.
        streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
        metrics, details = [], {"references_per_example": width, "signatures": {}}
        samples = [{"prediction": p, "references": r} for p, r in zip(predictions, refs)]
        n = len(predictions)
        for name, scorer in self._scorers().items():
            boot = self.config.bootstrap if n > 1 else 1
            score = scorer.corpus_score(list(predictions), streams, n_bootstrap=boot)
            ci = getattr(score, "_ci", None) if boot > 1 else None
            metrics.append(MetricValue(metric=name, value=float(score.score), n=n, higher_is_better=name != "ter",
                                       stderr=ci / 1.96 if ci is not None else None,
                                       ci_low=float(score.score - ci) if ci is not None else None,
                                       ci_high=float(score.score + ci) if ci is not None else None))
            details["signatures"][name] = str(scorer.get_signature())
            if name == "bleu":
                details["bleu"] = {"counts": list(score.counts), "totals": list(score.totals), "bp": score.bp,
                                   "sys_len": score.sys_len, "ref_len": score.ref_len,
                                   "precisions": list(score.precisions)}
            for sample, prediction, targets in zip(samples, predictions, refs):
                sample[name] = float(scorer.sentence_score(prediction, targets).score) if name != "bleu" else \
                    float(self._sentence_bleu(prediction, targets))
        return EvalResult(metrics=metrics, samples=samples, details=details)

    def _sentence_bleu(self, prediction: str, targets: list[str]) -> float:
        from sacrebleu.metrics import BLEU

        cfg = self.config
        if not hasattr(self, "_sentence_scorer"):
            self._sentence_scorer = BLEU(lowercase=cfg.lowercase, tokenize=cfg.tokenize, smooth_method=cfg.smooth_method,
                                         smooth_value=cfg.smooth_value, max_ngram_order=cfg.max_ngram_order,
                                         effective_order=True)
        return self._sentence_scorer.sentence_score(prediction, targets).score
