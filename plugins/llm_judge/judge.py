"""The ``llm`` judge: any endpoint as a judge, with three protocols and position-bias calibration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from stillroom import (ComponentConfig, Endpoint, EndpointRef, GenerationRequest, Judge, JudgeItem, Judgment,
                       RewardScorer, UserError)

from .calibration import OrderedReview, combine_pair_reviews, combine_verdicts, mean_rating, swap_verdict
from .parsing import SCORE_LOCATIONS, pair_failed, parse_pair_scores, parse_rating, parse_verdict
from .prompts import (PROTOCOLS, JudgePrompt, PromptBook, builtin_prompts, load_prompt_file, read_text_option,
                      render)

Calibration = Literal["none", "bpc", "mec", "mec+bpc"]
_VALID_CALIBRATION = {"pair_scores": {"none", "bpc", "mec", "mec+bpc"}, "single": {"none", "mec"},
                      "pair_verdict": {"none", "bpc"}}
_DEFAULT_CALIBRATION = {"pair_scores": "none", "single": "none", "pair_verdict": "bpc"}


@dataclass
class _Call:
    """One prompt for one item in one order, with the samples drawn for it so far."""

    item: int
    order: tuple[int, ...]
    prompt: JudgePrompt
    system: str
    user: str
    samples: int
    temperature: float
    drawn: int = 0
    raw: list[str] = field(default_factory=list)
    parsed: list[Any] = field(default_factory=list)
    attempts: int = 0

    def request(self, n: int, max_tokens: int) -> GenerationRequest:
        messages = ([{"role": "system", "content": self.system}] if self.system else [])
        messages.append({"role": "user", "content": self.user})
        return GenerationRequest(messages=messages, temperature=self.temperature, max_tokens=max_tokens, n=n)


class LLMJudge(Judge, RewardScorer):
    """Asks a language model to score or compare answers (pair scores, single ratings or pairwise verdicts)."""

    name = "llm"

    class Config(ComponentConfig):
        endpoint: EndpointRef = Field(None, description="the spec endpoint that does the judging (programmatic use "
                                                       "may pass an Endpoint object to the constructor instead)")
        protocol: Literal["pair_scores", "single", "pair_verdict"] = Field(
            "pair_scores", description="pair_scores: two 1-10 scores for two answers (Vicuna review, Lion referee); "
                                       "single: one [[rating]] per answer (MT-bench single grading); "
                                       "pair_verdict: [[A]]/[[B]]/[[C]] (MT-bench pairwise)")
        calibration: Calibration | None = Field(
            None, description="position-bias calibration: bpc judges both orders and averages per answer, mec "
                              "samples an evidence-first review k times at mec_temperature and averages, mec+bpc "
                              "does both; default: none for pair_scores and single, bpc for pair_verdict "
                              "(FastChat's two games, disagreement = tie)")
        mec_samples: int = Field(3, ge=1, description="k: reviews sampled per order under MEC")
        mec_temperature: float = Field(1.0, ge=0, description="sampling temperature of the MEC reviews")
        temperature: float = Field(0.0, ge=0, description="judge temperature when not sampling for MEC")
        max_tokens: int = Field(1024, ge=1, description="longest judgment, in tokens")
        retries: int = Field(2, ge=0, description="times an unparseable judgment is asked again (each time at a new "
                                                  "sample index, so the call cache gives a new draw) before it is "
                                                  "recorded as failed")
        prompt_file: str | None = Field(
            None, description="judge prompts to use instead of the built-in ones: a FastChat judge_prompts.jsonl, "
                              "an original Vicuna review prompt.jsonl, or a .txt str.format template")
        prompt_name: str | None = Field(
            None, description="the prompt in prompt_file for items without a reference answer (FastChat name such "
                              "as 'pair-v2', Vicuna prompt_id or category); the '-multi-turn' variant is used for "
                              "multi-turn items when present; default: chosen per item")
        ref_prompt_name: str | None = Field(
            None, description="the prompt for items with a reference answer (e.g. 'single-math-v1'); default: "
                              "prompt_name, else chosen per item")
        system_prompt: str | None = Field(
            None, description="system message replacing the prompt file's (text, or @path to read a file relative "
                              "to the prompt file); needed for .txt templates that have one")
        template_vars: dict[str, str] = Field(
            default_factory=dict, description="extra placeholder values for the template (text, or @path), e.g. "
                                              "{prompt = '@referee_default_prompt.txt'} for Lion's referee")
        score_location: Literal["first_line", "last_two_lines", "last_two_lines_unlabeled"] | None = Field(
            None, description="where pair_scores reads the two scores: first_line (Vicuna review), last_two_lines "
                              "(Lion referee: 'Assistant 1'/'Assistant 2' labels required), "
                              "last_two_lines_unlabeled (FairEval); default: the prompt's own (first_line for "
                              "prompt files)")

    def __init__(self, config: ComponentConfig | None = None, context=None, *, endpoint: Endpoint | None = None):
        super().__init__(config, context)
        cfg = self.config
        self._endpoint = endpoint
        self.calibration = cfg.calibration or _DEFAULT_CALIBRATION[cfg.protocol]
        if self.calibration not in _VALID_CALIBRATION[cfg.protocol]:
            raise UserError(f"calibration {self.calibration!r} does not apply to protocol {cfg.protocol!r}; "
                            f"use one of {sorted(_VALID_CALIBRATION[cfg.protocol])}", "judge[llm].calibration")
        if cfg.prompt_file:
            prompts = load_prompt_file(cfg.prompt_file, protocol=cfg.protocol, system_prompt=cfg.system_prompt,
                                       template_vars=cfg.template_vars)
            source = cfg.prompt_file
        else:
            prompts = builtin_prompts()
            system = read_text_option(cfg.system_prompt, None) if cfg.system_prompt else None
            extra = {k: read_text_option(v, None) for k, v in cfg.template_vars.items()}
            for prompt in prompts:
                prompt.system = system if system is not None else prompt.system
                prompt.defaults = dict(extra)
            source = "the built-in prompts"
        if not any(p.protocol == cfg.protocol for p in prompts):
            raise UserError(f"{source} has no prompt for protocol {cfg.protocol!r}", "judge[llm].protocol")
        self.book = PromptBook([p for p in prompts if p.protocol == cfg.protocol], source=source,
                               prompt_name=cfg.prompt_name, ref_prompt_name=cfg.ref_prompt_name)

    def source_files(self) -> list:
        return [Path(self.config.prompt_file)] if self.config.prompt_file else []

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            if self.config.endpoint is None:
                raise UserError("the llm judge needs an endpoint: set 'endpoint' to a spec endpoint name",
                                "judge[llm].endpoint")
            self._endpoint = self.context.endpoint(self.config.endpoint, "judge[llm].endpoint")
        return self._endpoint

    def describe(self) -> dict[str, Any]:
        """What this judge is, for result details (no secrets)."""
        return {"protocol": self.config.protocol, "calibration": self.calibration, "prompts": self.book.source,
                "endpoint": self.config.endpoint or getattr(self._endpoint, "name", None),
                "mec_samples": self.config.mec_samples if "mec" in self.calibration else None}

    # --- building the calls ---------------------------------------------------------------------------------

    def _orders(self, item: JudgeItem) -> list[tuple[int, ...]]:
        protocol = self.config.protocol
        if protocol == "single":
            return [(i,) for i in range(len(item.answers))]
        if len(item.answers) != 2:
            raise UserError(f"protocol {protocol!r} compares exactly two answers; item "
                            f"{item.id or item.question[:40]!r} has {len(item.answers)}", "judge item")
        return [(0, 1), (1, 0)] if "bpc" in self.calibration else [(0, 1)]

    def prompts_for(self, item: JudgeItem) -> list[tuple[tuple[int, ...], str, str]]:
        """(order, system message, user message) for every call this judge makes for ``item``."""
        evidence = "mec" in self.calibration
        prompt = self.book.select(self.config.protocol, item, evidence=evidence)
        return [(order, *render(prompt, item, self.config.protocol, order)) for order in self._orders(item)]

    def _calls(self, items: list[JudgeItem]) -> list[_Call]:
        mec = "mec" in self.calibration
        calls = []
        for index, item in enumerate(items):
            prompt = self.book.select(self.config.protocol, item, evidence=mec)
            for order in self._orders(item):
                system, user = render(prompt, item, self.config.protocol, order)
                calls.append(_Call(index, order, prompt, system, user,
                                   samples=self.config.mec_samples if mec else 1,
                                   temperature=self.config.mec_temperature if mec else self.config.temperature))
        return calls

    # --- parsing ----------------------------------------------------------------------------------------------

    def parse(self, text: str, prompt: JudgePrompt | None = None) -> Any:
        """The parsed value of one judge output, or None when it cannot be parsed."""
        protocol = self.config.protocol
        if protocol == "pair_scores":
            location = self.config.score_location or (prompt.score_location if prompt else None) or "first_line"
            scores = parse_pair_scores(text, location)
            return None if pair_failed(scores) else (scores[0], scores[1])
        if protocol == "single":
            rating = parse_rating(text)
            return None if rating == -1 else float(rating)
        verdict = parse_verdict(text, prompt.output_format if prompt else "[[A]]")
        return None if verdict == "error" else verdict

    # --- judging ----------------------------------------------------------------------------------------------

    def _draw(self, calls: list[tuple[_Call, int]]) -> None:
        """Ask for ``missing`` more samples of each call at fresh sample indices, in one batch."""
        if not calls:
            return
        requests = [call.request(call.drawn + missing, self.config.max_tokens) for call, missing in calls]
        answers = self.endpoint.generate(requests, description=f"judge {self.config.endpoint or self.endpoint.name}")
        for (call, missing), completions in zip(calls, answers):
            fresh = completions[call.drawn:call.drawn + missing]
            call.drawn += missing
            call.attempts += 1
            for completion in fresh:
                call.raw.append(completion.text)
                value = self.parse(completion.text, call.prompt)
                if value is not None:
                    call.parsed.append(value)

    def judge(self, items: list[JudgeItem]) -> list[Judgment]:
        calls = self._calls(items)
        self._draw([(call, call.samples) for call in calls])
        for _ in range(self.config.retries):
            pending = [(call, call.samples - len(call.parsed)) for call in calls if len(call.parsed) < call.samples]
            if not pending:
                break
            self._draw(pending)
        by_item: dict[int, list[_Call]] = {}
        for call in calls:
            by_item.setdefault(call.item, []).append(call)
        return [self._combine(items[i], by_item.get(i, [])) for i in range(len(items))]

    # --- as a reward -----------------------------------------------------------------------------------------

    def reward(self, prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
        """The single-answer grade (1-10, MT-bench single grading; with a reference the reference-guided prompt)
        of each completion; an unparseable judgment gets 0.0, below every grade. Every judge call goes through
        the endpoint's call cache, so the same completions are never paid twice."""
        if self.config.protocol != "single":
            raise UserError(f"as a reward the llm judge grades one answer at a time: set protocol = 'single' "
                            f"(got {self.config.protocol!r})", "judge[llm].protocol")
        if not len(prompts) == len(completions) == len(references):
            raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions, {len(references)} references")
        items = [JudgeItem(question=prompt, answers=[completion], reference=reference)
                 for prompt, completion, reference in zip(prompts, completions, references)]
        return [0.0 if judgment.failed else float(judgment.scores[0]) for judgment in self.judge(items)]

    def reward_endpoint(self) -> Endpoint | None:
        return self.endpoint

    def _combine(self, item: JudgeItem, calls: list[_Call]) -> Judgment:
        protocol = self.config.protocol
        raw = [text for call in calls for text in call.raw]
        outputs = len(raw)
        unparsed = outputs - sum(len(call.parsed) for call in calls)
        details: dict[str, Any] = {
            "protocol": protocol, "calibration": self.calibration, "prompt": calls[0].prompt.name if calls else None,
            "outputs": outputs, "unparsed": unparsed, "retries": sum(max(0, c.attempts - 1) for c in calls),
            "calls": [{"order": list(c.order), "raw": c.raw, "parsed": [list(p) if isinstance(p, tuple) else p
                                                                        for p in c.parsed]} for c in calls],
        }
        if protocol == "pair_scores":
            reviews = [OrderedReview(call.order, value) for call in calls for value in call.parsed]  # type: ignore[arg-type]
            scores, conflict = combine_pair_reviews(reviews)
            if scores is None:
                return Judgment(scores=[-1, -1], raw=raw, failed=True, details=details)
            return Judgment(scores=scores, raw=raw, position_conflict=conflict, details=details)
        if protocol == "single":
            ratings = [mean_rating(call.parsed) for call in calls]
            failed = any(r is None for r in ratings)
            return Judgment(scores=[-1.0 if r is None else r for r in ratings], raw=raw, failed=failed,
                            details=details)
        games = []
        for call in calls:
            verdict = call.parsed[0] if call.parsed else "error"
            games.append(verdict if call.order == (0, 1) else swap_verdict(verdict))
        details["games"] = games
        verdict, conflict = combine_verdicts(games[0], games[1] if len(games) > 1 else None)
        return Judgment(verdict=verdict, raw=raw, failed=verdict is None, position_conflict=conflict, details=details)


def judgment_rates(judgments: list[Judgment]) -> dict[str, Any]:
    """Parse-failure and position-conflict counts and rates over ``judgments`` (for evaluators' metrics)."""
    outputs = sum(int(j.details.get("outputs", len(j.raw))) for j in judgments)
    unparsed = sum(int(j.details.get("unparsed", 0)) for j in judgments)
    checked = [j.position_conflict for j in judgments if j.position_conflict is not None]
    return {"outputs": outputs, "unparsed": unparsed, "parse_failure_rate": unparsed / outputs if outputs else 0.0,
            "conflict_checked": len(checked), "conflicts": sum(checked),
            "position_conflict_rate": sum(checked) / len(checked) if checked else 0.0,
            "failed": sum(j.failed for j in judgments)}


__all__ = ["LLMJudge", "PROTOCOLS", "SCORE_LOCATIONS", "judgment_rates"]
