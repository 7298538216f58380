"""The ``vicuna`` evaluator: the 80 Vicuna questions answered by the model under test and by a reference model
(the teacher), judged pairwise, scored as the model's total relative to the reference's total."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from stillroom import (EndpointRef, EvalResult, Evaluator, EvaluatorConfig, GenerationRequest, JudgeItem, MetricValue,
                       Subject, UserError, read_jsonl)

from .scoring import summarize

# FastChat llm_judge's per-category sampling temperatures; categories not listed use DEFAULT_TEMPERATURE.
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
                "stem": 0.1, "humanities": 0.1}
DEFAULT_TEMPERATURE = 0.7
_FIXED_JUDGE_OPTIONS = ("endpoint", "protocol", "calibration")


def load_questions(path: Path) -> list[dict[str, Any]]:
    """Questions as ``{question_id, category, question}`` from the FastChat layout (``turns``) or the original
    Vicuna layout (``text``)."""
    questions = []
    for number, row in read_jsonl(path, numbered=True, encoding="utf-8"):
        text = row["turns"][0] if "turns" in row else row.get("text")
        if text is None or "question_id" not in row:
            raise UserError("a question needs question_id and turns (FastChat) or text (Vicuna)", f"{path}:{number}")
        questions.append({"question_id": row["question_id"], "category": row.get("category", "generic"),
                          "question": text})
    return questions


def load_answers(path: Path) -> dict[Any, str]:
    """Recorded answers by question_id, from a FastChat model_answer file (``choices[0].turns[0]``) or an
    original Vicuna answer file (``text``)."""
    answers = {}
    for number, row in read_jsonl(path, numbered=True, encoding="utf-8"):
        if "choices" in row:
            answers[row["question_id"]] = row["choices"][0]["turns"][0]
        elif "text" in row:
            answers[row["question_id"]] = row["text"]
        else:
            raise UserError("an answer needs choices[0].turns (FastChat) or text (Vicuna)", f"{path}:{number}")
    return answers


class VicunaEvaluator(Evaluator):
    """Vicuna-bench: answers judged pairwise against a reference model's, reported as a percentage of its score."""

    name = "vicuna"

    class Config(EvaluatorConfig):
        judge: EndpointRef = Field(description="the spec endpoint that judges (a strong model)")
        reference: EndpointRef = Field(
            None, description="the spec endpoint whose answers are the reference, normally the teacher's endpoint")
        reference_answers: str | None = Field(
            None, description="recorded reference answers instead of a reference endpoint: a FastChat model_answer "
                              ".jsonl or an original Vicuna answer .jsonl")
        data_dir: str | None = Field(
            None, description="folder with question.jsonl (FastChat vicuna_bench or original Vicuna layout); "
                              "default: vicuna_bench/ in the data mirror (STILLROOM_DATA), else the hub")
        hub_repo: str = Field("lmsys/mt-bench", description="hub repository to download the questions from when no "
                                                            "local copy is configured")
        hub_repo_type: Literal["dataset", "space", "model"] = Field("space", description="type of hub_repo")
        hub_file: str = Field("data/vicuna_bench/question.jsonl", description="path of question.jsonl in hub_repo")
        settings: list[Literal["1", "2"]] = Field(
            default_factory=lambda: ["1", "2"],
            description="1: one review per question with the reference as Assistant 1 (as Vicuna and Lion report); "
                        "2: MEC + BPC (evidence-first reviews sampled k times in both orders, averaged)")
        reference_first: bool = Field(True, description="Setting 1 shows the reference as Assistant 1")
        judge_options: dict[str, Any] = Field(
            default_factory=dict, description="options of the Setting 1 llm judge (prompt_file, prompt_name, "
                                              "score_location, max_tokens, retries...)")
        calibrated_judge_options: dict[str, Any] = Field(
            default_factory=dict, description="options of the Setting 2 llm judge (mec_samples = k, default 3; "
                                              "mec_temperature; prompt_file of an evidence-first prompt...)")
        temperatures: dict[str, float] = Field(
            default_factory=lambda: dict(TEMPERATURES),
            description="answer sampling temperature per question category (FastChat's temperature_config)")
        default_temperature: float = Field(DEFAULT_TEMPERATURE, ge=0, description="temperature of other categories")
        max_tokens: int = Field(1024, ge=1, description="longest answer, in tokens")
        limit: int | None = Field(None, ge=1, description="only the first N questions (smoke tests)")
        categories: list[str] | None = Field(None, description="only questions of these categories")
        bootstrap_samples: int = Field(1000, ge=10, description="bootstrap resamples of the questions for the CI")
        confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the interval")

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        cfg = self.config
        if (cfg.reference is None) == (cfg.reference_answers is None):
            raise UserError("set exactly one of 'reference' (an endpoint, normally the teacher's) and "
                            "'reference_answers' (a file)", "evaluator[vicuna].reference")
        for options, where in ((cfg.judge_options, "judge_options"), (cfg.calibrated_judge_options,
                                                                       "calibrated_judge_options")):
            fixed = [k for k in _FIXED_JUDGE_OPTIONS if k in options]
            if fixed:
                raise UserError(f"{', '.join(fixed)} is set by the evaluator", f"evaluator[vicuna].{where}")
        # build the judges now, so a bad judge option fails when the spec is loaded, not after answering
        self.judges = {setting: self._judge(setting) for setting in cfg.settings}

    # --- data -------------------------------------------------------------------------------------------------

    def question_file(self) -> Path:
        cfg = self.config
        if cfg.data_dir:
            path = Path(cfg.data_dir).expanduser() / "question.jsonl"
            if not path.is_file():
                raise UserError("no question.jsonl in data_dir", str(path))
            return path
        mirror = self.context.data_path("vicuna_bench", "question.jsonl")
        if mirror is not None and mirror.is_file():
            return mirror
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(cfg.hub_repo, cfg.hub_file, repo_type=cfg.hub_repo_type))
        except Exception as exc:  # offline, missing repo
            raise UserError(f"cannot load the Vicuna questions from the hub ({cfg.hub_repo}/{cfg.hub_file}: "
                            f"{type(exc).__name__}); set data_dir or STILLROOM_DATA to a local copy",
                            "evaluator[vicuna].data_dir") from None

    def source_files(self) -> list:
        files = []
        try:
            files.append(self.question_file())
        except UserError:
            pass
        if self.config.reference_answers:
            files.append(Path(self.config.reference_answers))
        return files

    def questions(self) -> list[dict[str, Any]]:
        cfg = self.config
        rows = load_questions(self.question_file())
        if cfg.categories:
            rows = [q for q in rows if q["category"] in cfg.categories]
        return rows[:cfg.limit] if cfg.limit else rows

    def requests(self, questions: list[dict[str, Any]]) -> list[GenerationRequest]:
        cfg = self.config
        out = []
        for q in questions:
            temperature = cfg.temperatures.get(q["category"], cfg.default_temperature)
            out.append(GenerationRequest(messages=[{"role": "user", "content": q["question"]}], max_tokens=cfg.max_tokens,
                                         temperature=temperature, seed=self.context.seed if temperature > 0 else None))
        return out

    def reference_answers(self, questions: list[dict[str, Any]]) -> list[str]:
        cfg = self.config
        if cfg.reference_answers:
            path = Path(cfg.reference_answers).expanduser()
            if not path.is_file():
                raise UserError("no such file", str(path))
            recorded = load_answers(path)
            missing = [q["question_id"] for q in questions if q["question_id"] not in recorded]
            if missing:
                raise UserError(f"no reference answer for questions {missing[:5]}", str(path))
            return [recorded[q["question_id"]] for q in questions]
        endpoint = self.context.endpoint(cfg.reference, "evaluator[vicuna].reference")
        answers = endpoint.generate(self.requests(questions), description="vicuna reference answers")
        return [a[0].text for a in answers]

    # --- judging ----------------------------------------------------------------------------------------------

    def _judge(self, setting: str):
        cfg = self.config
        if setting == "1":
            return self.context.build("judge", "llm", endpoint=cfg.judge, protocol="pair_scores", calibration="none",
                                      **cfg.judge_options)
        return self.context.build("judge", "llm", endpoint=cfg.judge, protocol="pair_scores",
                                  calibration="mec+bpc", **cfg.calibrated_judge_options)

    def score_answers(self, questions: list[dict[str, Any]], model_answers: list[str],
                      reference_answers: list[str]) -> EvalResult:
        """Judge the model's answers against the reference's and compute every metric."""
        cfg = self.config
        samples = [{"question_id": q["question_id"], "category": q["category"], "question": q["question"],
                    "model_answer": m, "reference_answer": r}
                   for q, m, r in zip(questions, model_answers, reference_answers)]
        metrics: list[MetricValue] = []
        details: dict[str, Any] = {"settings": {}}
        outputs = unparsed = checked = conflicts = 0
        for setting in cfg.settings:
            judge = self.judges.get(setting) or self._judge(setting)
            items = []
            for q, m, r in zip(questions, model_answers, reference_answers):
                answers = [r, m] if setting == "2" or cfg.reference_first else [m, r]
                items.append(JudgeItem(question=q["question"], answers=answers, category=q["category"],
                                       id=str(q["question_id"])))
            judgments = judge.judge(items)
            ref_at = 0 if setting == "2" or cfg.reference_first else 1
            rows = []
            for sample, judgment in zip(samples, judgments):
                scores = judgment.scores or [-1, -1]
                row = {"model_score": scores[1 - ref_at], "reference_score": scores[ref_at],
                       "failed": judgment.failed, "category": sample["category"]}
                rows.append(row)
                sample[f"setting{setting}"] = {**{k: row[k] for k in ("model_score", "reference_score", "failed")},
                                               "position_conflict": judgment.position_conflict, "raw": judgment.raw,
                                               "prompt": judgment.details.get("prompt")}
                outputs += int(judgment.details.get("outputs", len(judgment.raw)))
                unparsed += int(judgment.details.get("unparsed", 0))
                if judgment.position_conflict is not None:
                    checked += 1
                    conflicts += judgment.position_conflict
            summary = summarize(rows, samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=self.context.seed)
            summary["judge"] = judge.describe()
            details["settings"][setting] = summary
            suffix = "" if setting == "1" else "_calibrated"
            n = summary["n"]
            if summary["relative_score"] is not None:
                ci = summary["ci"]
                metrics.append(MetricValue(metric=f"relative_score{suffix}", value=summary["relative_score"], n=n,
                                           stderr=ci["stderr"], ci_low=ci["low"], ci_high=ci["high"]))
            if n:
                rate = summary["win"] / n
                metrics.append(MetricValue(metric=f"win_rate{suffix}", value=rate, n=n,
                                           stderr=(rate * (1 - rate) / n) ** 0.5))
        conflict_rate = conflicts / checked if checked else 0.0
        parse_rate = unparsed / outputs if outputs else 0.0
        metrics.append(MetricValue(metric="position_conflict_rate", value=conflict_rate, n=checked,
                                   stderr=(conflict_rate * (1 - conflict_rate) / checked) ** 0.5 if checked else None,
                                   higher_is_better=False))
        metrics.append(MetricValue(metric="parse_failure_rate", value=parse_rate, n=outputs,
                                   stderr=(parse_rate * (1 - parse_rate) / outputs) ** 0.5 if outputs else None,
                                   higher_is_better=False))
        details.update(questions=len(questions), judge_outputs=outputs, unparsed_outputs=unparsed,
                       conflicts_checked=checked, conflicts=conflicts)
        if not checked:
            details["position_conflict_note"] = "position conflicts are measured only when both orders are judged " \
                                                "(Setting 2)"
        return EvalResult(metrics=metrics, samples=samples, details=details)

    def evaluate(self, subject: Subject) -> EvalResult:
        questions = self.questions()
        if not questions:
            raise UserError("no questions selected", "evaluator[vicuna]")
        reference = self.reference_answers(questions)
        answers = [a[0].text for a in subject.generate(self.requests(questions))]
        result = self.score_answers(questions, answers, reference)
        result.details["subject"] = subject.name
        return result
