"""The ``mt_bench`` evaluator: 80 two-turn questions, judged by single-answer grading (1-10 per turn) or
pairwise against a baseline model (win / tie / loss), with reference answers for math, reasoning and coding."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from stillroom import (EndpointRef, EvalResult, Evaluator, EvaluatorConfig, GenerationRequest, JudgeItem, MetricValue,
                       Subject, UserError, read_jsonl)

# FastChat llm_judge's sampling temperature per category, its default for other categories, and the
# categories judged with a reference answer.
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
                "stem": 0.1, "humanities": 0.1}
DEFAULT_TEMPERATURE = 0.7
NEED_REF_CATS = ["math", "reasoning", "coding"]


def load_turn_answers(path: Path) -> dict[Any, list[str]]:
    """Answer turns by question_id from a FastChat model_answer / reference_answer file."""
    out = {}
    for number, row in read_jsonl(path, numbered=True, encoding="utf-8"):
        try:
            out[row["question_id"]] = list(row["choices"][0]["turns"])
        except (KeyError, IndexError, TypeError):
            raise UserError("an answer needs question_id and choices[0].turns", f"{path}:{number}") from None
    return out


def _mean_stderr(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, (var / len(values)) ** 0.5


class MTBenchEvaluator(Evaluator):
    """MT-bench: two-turn questions graded 1-10 per turn or compared with a baseline by an LLM judge."""

    name = "mt_bench"

    class Config(EvaluatorConfig):
        judge: EndpointRef = Field(description="the spec endpoint that judges (a strong model)")
        mode: Literal["single", "pairwise-baseline"] = Field(
            "single", description="single: each turn graded 1-10, averaged; pairwise-baseline: each turn compared "
                                  "with the baseline's in both orders (disagreement = tie), reported as win rate")
        baseline: EndpointRef = Field(None, description="pairwise-baseline: the spec endpoint answering as "
                                                               "the baseline (e.g. the teacher)")
        baseline_answers: str | None = Field(None, description="pairwise-baseline: recorded baseline answers "
                                                               "instead of an endpoint (FastChat model_answer .jsonl)")
        data_dir: str | None = Field(
            None, description="folder with question.jsonl and reference_answer/ (FastChat mt_bench layout); "
                              "default: mt_bench/ in the data mirror (STILLROOM_DATA), else the hub")
        reference_answers: str | None = Field(
            None, description="reference answers for need_ref_categories (FastChat format); default: "
                              "reference_answer/gpt-4.jsonl beside the questions, else the questions' own 'reference'")
        hub_repo: str = Field("lmsys/mt-bench", description="hub repository holding the MT-bench files")
        hub_repo_type: Literal["dataset", "space", "model"] = Field("space", description="type of hub_repo")
        hub_dir: str = Field("data/mt_bench", description="folder of question.jsonl inside hub_repo")
        need_ref_categories: list[str] = Field(default_factory=lambda: list(NEED_REF_CATS),
                                               description="categories judged with a reference answer")
        turns: list[Literal[1, 2]] = Field(default_factory=lambda: [1, 2], description="turns to judge")
        judge_options: dict[str, Any] = Field(
            default_factory=dict, description="options of the llm judge (prompt_file = FastChat judge_prompts.jsonl, "
                                              "prompt_name, ref_prompt_name, max_tokens, retries...)")
        temperatures: dict[str, float] = Field(default_factory=lambda: dict(TEMPERATURES),
                                               description="answer sampling temperature per category")
        default_temperature: float = Field(DEFAULT_TEMPERATURE, ge=0, description="temperature of other categories")
        max_tokens: int = Field(1024, ge=1, description="longest answer per turn, in tokens")
        limit: int | None = Field(None, ge=1, description="only the first N questions (smoke tests)")
        categories: list[str] | None = Field(None, description="only questions of these categories")

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        cfg = self.config
        if cfg.mode == "pairwise-baseline" and (cfg.baseline is None) == (cfg.baseline_answers is None):
            raise UserError("pairwise-baseline needs exactly one of 'baseline' (an endpoint) and 'baseline_answers' "
                            "(a file)", "evaluator[mt_bench].baseline")
        fixed = [k for k in ("endpoint", "protocol") if k in cfg.judge_options]
        if fixed:
            raise UserError(f"{', '.join(fixed)} is set by the evaluator", "evaluator[mt_bench].judge_options")
        # built now, so a bad judge option fails when the spec is loaded, not after answering
        self.judge = self.context.build("judge", "llm", endpoint=cfg.judge,
                                        protocol="pair_verdict" if cfg.mode == "pairwise-baseline" else "single",
                                        **cfg.judge_options)

    # --- data -------------------------------------------------------------------------------------------------

    def data_folder(self) -> Path:
        cfg = self.config
        if cfg.data_dir:
            folder = Path(cfg.data_dir).expanduser()
            if not (folder / "question.jsonl").is_file():
                raise UserError("no question.jsonl in data_dir", str(folder))
            return folder
        mirror = self.context.data_path("mt_bench")
        if mirror is not None and (mirror / "question.jsonl").is_file():
            return mirror
        try:
            from huggingface_hub import hf_hub_download

            question = hf_hub_download(cfg.hub_repo, f"{cfg.hub_dir}/question.jsonl", repo_type=cfg.hub_repo_type)
            try:
                hf_hub_download(cfg.hub_repo, f"{cfg.hub_dir}/reference_answer/gpt-4.jsonl", repo_type=cfg.hub_repo_type)
            except Exception:  # reference answers are optional: the questions' own 'reference' is the fallback
                pass
            return Path(question).parent
        except Exception as exc:
            raise UserError(f"cannot load MT-bench from the hub ({cfg.hub_repo}/{cfg.hub_dir}: {type(exc).__name__}); "
                            "set data_dir or STILLROOM_DATA to a local copy", "evaluator[mt_bench].data_dir") from None

    def source_files(self) -> list:
        try:
            folder = self.data_folder()
        except UserError:
            return []
        files = [folder / "question.jsonl", folder / "reference_answer" / "gpt-4.jsonl"]
        files += [Path(p) for p in (self.config.reference_answers, self.config.baseline_answers) if p]
        return files

    def questions(self) -> list[dict[str, Any]]:
        cfg = self.config
        path = self.data_folder() / "question.jsonl"
        numbered = read_jsonl(path, numbered=True, encoding="utf-8")
        rows = [row for _, row in numbered]
        for number, row in numbered:
            if "question_id" not in row or not row.get("turns"):
                raise UserError("a question needs question_id and turns", f"{path}:{number}")
        if cfg.categories:
            rows = [q for q in rows if q.get("category") in cfg.categories]
        return rows[:cfg.limit] if cfg.limit else rows

    def references(self, questions: list[dict[str, Any]]) -> dict[Any, list[str]]:
        cfg = self.config
        path = Path(cfg.reference_answers).expanduser() if cfg.reference_answers else \
            self.data_folder() / "reference_answer" / "gpt-4.jsonl"
        if cfg.reference_answers and not path.is_file():
            raise UserError("no such file", str(path))
        recorded = load_turn_answers(path) if path.is_file() else {}
        out = {}
        for q in questions:
            if q.get("category") not in cfg.need_ref_categories:
                continue
            turns = recorded.get(q["question_id"]) or q.get("reference")
            if not turns:
                raise UserError(f"question {q['question_id']} ({q.get('category')}) needs a reference answer",
                                str(path))
            out[q["question_id"]] = list(turns)
        return out

    # --- answering --------------------------------------------------------------------------------------------

    def answer(self, generate, questions: list[dict[str, Any]]) -> list[list[str]]:
        """Every turn of every question, each turn seeing the conversation so far."""
        cfg = self.config
        answers: list[list[str]] = [[] for _ in questions]
        turns = max(len(q["turns"]) for q in questions)
        for turn in range(turns):
            batch, where = [], []
            for i, q in enumerate(questions):
                if turn >= len(q["turns"]):
                    continue
                messages = []
                for t in range(turn):
                    messages += [{"role": "user", "content": q["turns"][t]},
                                 {"role": "assistant", "content": answers[i][t]}]
                messages.append({"role": "user", "content": q["turns"][turn]})
                temperature = cfg.temperatures.get(q.get("category"), cfg.default_temperature)
                batch.append(GenerationRequest(messages=messages, max_tokens=cfg.max_tokens, temperature=temperature,
                                               seed=self.context.seed if temperature > 0 else None))
                where.append(i)
            for i, completions in zip(where, generate(batch)):
                answers[i].append(completions[0].text)
        return answers

    def baseline_turns(self, questions: list[dict[str, Any]]) -> list[list[str]]:
        cfg = self.config
        if cfg.baseline_answers:
            path = Path(cfg.baseline_answers).expanduser()
            if not path.is_file():
                raise UserError("no such file", str(path))
            recorded = load_turn_answers(path)
            missing = [q["question_id"] for q in questions if q["question_id"] not in recorded]
            if missing:
                raise UserError(f"no baseline answer for questions {missing[:5]}", str(path))
            return [recorded[q["question_id"]] for q in questions]
        endpoint = self.context.endpoint(cfg.baseline, "evaluator[mt_bench].baseline")
        return self.answer(lambda batch: endpoint.generate(batch, description="mt_bench baseline answers"), questions)

    # --- judging ----------------------------------------------------------------------------------------------

    @staticmethod
    def item(q: dict[str, Any], turn: int, answer_sets: list[list[str]], reference: list[str] | None) -> JudgeItem:
        """The judge item for ``turn`` (1-based) of ``q``: single-turn for turn 1, the conversation after."""
        if turn == 1:
            return JudgeItem(question=q["turns"][0], answers=[a[0] for a in answer_sets],
                             reference=reference[0] if reference else None, reference_turns=reference,
                             category=q.get("category"), id=f"{q['question_id']}-1")
        return JudgeItem(question=q["turns"][turn - 1], answers=[a[turn - 1] for a in answer_sets],
                         turns=list(q["turns"][:turn]), answer_turns=[list(a[:turn]) for a in answer_sets],
                         reference=None, reference_turns=reference[:turn] if reference else None,
                         category=q.get("category"), id=f"{q['question_id']}-{turn}")

    def score_answers(self, questions: list[dict[str, Any]], model_turns: list[list[str]],
                      baseline_turns: list[list[str]] | None = None) -> EvalResult:
        """Judge the model's answers (and the baseline's, pairwise) and compute every metric."""
        cfg = self.config
        refs = self.references(questions)
        pairwise = cfg.mode == "pairwise-baseline"
        judge = self.judge
        items, meta = [], []
        for i, q in enumerate(questions):
            answer_sets = [model_turns[i]] + ([baseline_turns[i]] if pairwise and baseline_turns else [])
            for turn in cfg.turns:
                if turn > len(q["turns"]) or any(len(a) < turn for a in answer_sets):
                    continue
                items.append(self.item(q, turn, answer_sets, refs.get(q["question_id"])))
                meta.append((q, turn))
        judgments = judge.judge(items)
        samples = []
        outputs = unparsed = checked = conflicts = 0
        per_turn: dict[int, list[float]] = {}
        tally = {"win": 0, "loss": 0, "tie": 0, "error": 0}
        for (q, turn), item, judgment in zip(meta, items, judgments):
            outputs += int(judgment.details.get("outputs", len(judgment.raw)))
            unparsed += int(judgment.details.get("unparsed", 0))
            if judgment.position_conflict is not None:
                checked += 1
                conflicts += judgment.position_conflict
            sample = {"question_id": q["question_id"], "category": q.get("category"), "turn": turn,
                      "question": item.question, "answer": item.answers[0], "failed": judgment.failed,
                      "prompt": judgment.details.get("prompt"), "raw": judgment.raw}
            if pairwise:
                sample["baseline_answer"] = item.answers[1]
                sample["games"] = judgment.details.get("games")
                outcome = "error" if judgment.failed else {"A": "win", "B": "loss"}.get(judgment.verdict, "tie")
                tally[outcome] += 1
                sample["outcome"] = outcome
                sample["position_conflict"] = judgment.position_conflict
            else:
                score = (judgment.scores or [-1])[0]
                sample["score"] = score
                if score != -1:
                    per_turn.setdefault(turn, []).append(score)
            samples.append(sample)
        metrics: list[MetricValue] = []
        details: dict[str, Any] = {"mode": cfg.mode, "judge": judge.describe(),
                                   "questions": len(questions)}
        if pairwise:
            games = tally["win"] + tally["loss"] + tally["tie"]
            details.update(tally)
            if games:
                for name, value in (("win_rate", tally["win"] / games), ("loss_rate", tally["loss"] / games),
                                    ("win_rate_adjusted", (tally["win"] + 0.5 * tally["tie"]) / games)):
                    metrics.append(MetricValue(metric=name, value=value, n=games, higher_is_better=name != "loss_rate",
                                               stderr=(value * (1 - value) / games) ** 0.5))
        else:
            every = [s for scores in per_turn.values() for s in scores]
            mean, stderr = _mean_stderr(every)
            if mean is not None:
                metrics.append(MetricValue(metric="score", value=mean, n=len(every), stderr=stderr))
            for turn in sorted(per_turn):
                mean, stderr = _mean_stderr(per_turn[turn])
                metrics.append(MetricValue(metric=f"score_turn{turn}", value=mean, n=len(per_turn[turn]),
                                           stderr=stderr))
            details["failed"] = sum(1 for s in samples if s["score"] == -1)
        conflict_rate = conflicts / checked if checked else 0.0
        parse_rate = unparsed / outputs if outputs else 0.0
        metrics.append(MetricValue(metric="position_conflict_rate", value=conflict_rate, n=checked,
                                   higher_is_better=False,
                                   stderr=(conflict_rate * (1 - conflict_rate) / checked) ** 0.5 if checked else None))
        metrics.append(MetricValue(metric="parse_failure_rate", value=parse_rate, n=outputs, higher_is_better=False,
                                   stderr=(parse_rate * (1 - parse_rate) / outputs) ** 0.5 if outputs else None))
        details.update(judge_outputs=outputs, unparsed_outputs=unparsed, conflicts_checked=checked,
                       conflicts=conflicts)
        return EvalResult(metrics=metrics, samples=samples, details=details)

    def evaluate(self, subject: Subject) -> EvalResult:
        questions = self.questions()
        if not questions:
            raise UserError("no questions selected", "evaluator[mt_bench]")
        baseline = self.baseline_turns(questions) if self.config.mode == "pairwise-baseline" else None
        model = self.answer(subject.generate, questions)
        result = self.score_answers(questions, model, baseline)
        result.details["subject"] = subject.name
        return result
