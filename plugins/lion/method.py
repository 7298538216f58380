"""The ``lion`` method: adversarial distillation over a Train Pool and a Cache Pool (Jiang et al., 2023).

Both pools start as the first ``initial_pool`` training instructions. Iteration k, as resumable stages under
``stages/methods/<label>/iter<k>/``:

* ``pools``: the pools of this iteration (k > 1: step 4 of iteration k-1 — the new instructions replace the
  Train Pool and are added to the Cache Pool).
* ``imitation_answers``: the teacher answers the Train Pool; ``train``: the student is fine-tuned on
  (instruction, answer) with this iteration's share of the budget's steps; ``heldout`` (optional): the
  student's held-out score.
* ``discrimination``: teacher and student answer the Cache Pool; the referee scores each pair twice with the
  answers in swapped positions; scores are averaged over both orders, d = teacher - student, d >= tau is hard.
* ``generation`` (not in the last iteration): N new instructions from random hard seeds and random easy seeds
  at ratio r, through the generator's post-filters, a test-split filter and the ROUGE-L novelty filter.

Cheaper than the paper: the teacher never answers one instruction twice (the answers of earlier stages are
reused, on top of the call cache), and a (teacher answer, student answer) pair judged once is not judged again.
Every stage records the requests per role next to what the original protocol would send; the learning
dynamics go to ``dynamics.json/.md/.svg`` and to ``job.info["iterations"]`` (the leaderboard's chart).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

from stillroom import (Endpoint, GenerationRequest, InstructionWriter, Judge, JudgeItem, Judgment, Method, MethodJob,
                       Student, Teacher, UserError, read_jsonl, write_jsonl_atomic)

from . import dynamics
from .config import LionConfig
from .pools import (NoveltyFilter, Plan, classify, combine_orders, hard_easy_counts, make_plan, normalise,
                    parse_ratio, pool_record, sort_reviewed, update_pools)
from .prompts import teacher_prompts

STAT_KEYS = ("requests", "cache_hits", "prompt_tokens", "completion_tokens", "retries", "cost")
# The per-iteration numbers that go to the leaderboard (each becomes a chart there); dynamics.json has all.
LEADERBOARD_FIELDS = ("iteration", "train_pool", "cache_pool", "hard_fraction", "mean_d", "heldout", "generated",
                      "calls_teacher", "calls_referee", "calls_generator", "tokens", "cost")
DEFAULTS = {"steps": 200, "batch_size": 16, "learning_rate": 1e-4}
# The optimizer state an iteration's train stage keeps for the next iteration (one schedule across them).
OPTIMIZER_STATE = "optimizer_state"


def endpoint_of(component: Teacher | Student | Judge | None) -> Endpoint | None:
    """The endpoint a teacher, student or referee talks through (declared on each role), or None (rule-based
    components, and an llm judge whose endpoint is not configured: judging reports that)."""
    if component is None:
        return None
    try:
        return component.endpoint
    except UserError:
        return None


class Meter:
    """Differences of an endpoint's counters around a block of calls."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.before = dict(endpoint.stats) if endpoint is not None else {}

    def delta(self) -> dict[str, float]:
        if self.endpoint is None:
            return {key: 0 for key in STAT_KEYS}
        after = self.endpoint.stats
        out = {}
        for key in STAT_KEYS:
            value = after.get(key, 0) - self.before.get(key, 0)
            out[key] = round(value, 6) if isinstance(value, float) else value
        return out


def pair_key(prompt: str, teacher: str, student: str) -> str:
    return hashlib.sha256(json.dumps([prompt, teacher, student]).encode()).hexdigest()[:24]


class Lion(Method):
    """Adversarial distillation: imitate the teacher, let a referee find the hard instructions, generate
    more like them, repeat (Lion)."""

    name = "lion"
    Config = LionConfig

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        self.ratio = parse_ratio(self.config.hard_easy_ratio)
        self._referee: Judge | None = None
        self._generator = None
        self._heldout = None

    # -- parts --------------------------------------------------------------------------------------------

    def _build(self, role: str, ref: dict[str, Any]):
        options = {k: v for k, v in ref.items() if k != "kind"}
        return self.context.build(role, ref["kind"], **options)

    @property
    def referee(self) -> Judge:
        if self._referee is None:
            referee = self._build("judge", self.config.referee)
            if "bpc" in referee.calibration:
                raise UserError("lion already asks the referee for both answer orders and averages them; turn the "
                                "judge's own order swapping off (calibration = 'none' or 'mec')", "referee.calibration")
            self._referee = referee
        return self._referee

    @property
    def generator(self) -> InstructionWriter:
        if self._generator is None:
            generator = self._build("generator", self.config.instruction_generator)
            if not isinstance(generator, InstructionWriter):
                raise UserError(f"generator kind {generator.name!r} cannot write instructions for lion (it is not a "
                                f"stillroom.InstructionWriter); use 'lion_llm' or 'arithmetic_variations'",
                                "instruction_generator.kind")
            self._generator = generator
        return self._generator

    @property
    def heldout(self):
        if self._heldout is None and self.config.heldout is not None:
            self._heldout = self._build("evaluator", self.config.heldout)
        return self._heldout

    def plan(self, job: MethodJob) -> Plan:
        """The budget split over iterations (a conflict between the budget and an option is the core's check,
        made once for every method)."""
        from stillroom.training import budget_value

        cfg = self.config
        values = {name: budget_value(job, name, getattr(cfg, name), DEFAULTS.get(name))
                  for name in ("train_examples", "steps", "batch_size", "learning_rate")}
        train = job.data.get("train") or []
        if not train:
            raise UserError("the data has no 'train' split, or it is empty", f"methods[{job.label}]")
        return make_plan(iterations=cfg.iterations, total_examples=values["train_examples"],
                         initial_pool=cfg.initial_pool, per_iteration=cfg.instructions_per_iteration,
                         available=len(train), steps=values["steps"], batch_size=values["batch_size"],
                         learning_rate=values["learning_rate"], location=f"methods[{job.label}]")

    # -- the run ------------------------------------------------------------------------------------------

    def run(self, job: MethodJob) -> Student:
        cfg = self.config
        plan = self.plan(job)
        # build the roles first, so a wrong kind or option fails before any stage runs
        _ = self.referee, self.generator, self.heldout
        prompts = teacher_prompts(cfg.prompts, cfg.teacher_system_prompt, cfg.teacher_template, self.context,
                                  f"methods[{job.label}]")
        state = _State(job, self, plan, prompts)
        for k in range(1, plan.iterations + 1):
            state.iteration(k)
            state.publish()  # after every iteration, so a run stopped later still shows its dynamics
        return job.student


class _State:
    """One lion run in progress: the answers and reviews known so far and the per-iteration stages."""

    def __init__(self, job: MethodJob, method: Lion, plan: Plan, prompts):
        self.job, self.method, self.cfg, self.plan, self.prompts = job, method, method.config, plan, prompts
        self.answers: dict[str, str] = {}  # normalised instruction -> teacher answer
        self.reviews: dict[str, dict[str, Any]] = {}  # pair key -> {"forward": [..]|None, "backward": ...}
        self.test = job.data.get("test") or []
        self.folder = job.stage_path()

    # -- helpers -------------------------------------------------------------------------------------------

    def _stage(self, name: str, produce) -> tuple[Path, dict[str, Any]]:
        path = self.job.stage(name, produce)
        metrics = json.loads((path / "stage.json").read_text()) if (path / "stage.json").exists() else {}
        return path, metrics

    def _teacher_request(self, instruction: str) -> GenerationRequest:
        sampling = self.cfg.teacher_sampling
        return GenerationRequest(messages=self.prompts.messages(instruction), temperature=sampling.temperature,
                                 top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                                 seed=self.job.seed if sampling.temperature > 0 else None)

    def _ask_teacher(self, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
        """Teacher answers for ``rows``' instructions that have none yet (each unique instruction once);
        returns the accounting and how many instructions were asked."""
        meter = Meter(endpoint_of(self.job.teacher))
        todo: dict[str, str] = {}
        for row in rows:
            key = normalise(row["prompt"])
            if key not in self.answers and key not in todo:
                todo[key] = row["prompt"]
        if todo:
            keys = list(todo)
            completions = self.job.teacher.generate([self._teacher_request(todo[k]) for k in keys],
                                                    description="lion teacher answers")
            for key, answers in zip(keys, completions):
                self.answers[key] = answers[0].text if answers else ""
        return meter.delta(), len(todo)

    def _learn_answers(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row.get("teacher_answer") is not None:
                self.answers.setdefault(normalise(row["prompt"]), row["teacher_answer"])

    # -- stages --------------------------------------------------------------------------------------------

    def pools(self, k: int) -> tuple[list[dict], list[dict]]:
        def produce(folder: Path):
            if k == 1:
                # the budget's problems in the seed's order (the same ids every method trains on); Lion's
                # budget counts teacher-answered instructions, so the rest of it is instructions it generates
                problems = self.job.train_records()
                if len(problems) < self.plan.pool_sizes[0]:
                    problems = list(self.job.data["train"])
                initial = [pool_record(r, "data") for r in problems[:self.plan.pool_sizes[0]]]
                train, cache = update_pools([], initial)
            else:
                previous = self.job.stage_path(f"iter{k - 1}")
                cache_before = read_jsonl(previous / "pools" / "cache_pool.jsonl")
                new = [pool_record(r, f"iter{k - 1}-{r.get('mode', 'new')}")
                       for r in read_jsonl(previous / "generation" / "records.jsonl")]
                train, cache = update_pools(cache_before, new)
            write_jsonl_atomic(folder / "train_pool.jsonl", train)
            write_jsonl_atomic(folder / "cache_pool.jsonl", cache)
            return {"train_pool": len(train), "cache_pool": len(cache)}

        path, _ = self._stage(f"iter{k}/pools", produce)
        return read_jsonl(path / "train_pool.jsonl"), read_jsonl(path / "cache_pool.jsonl")

    def imitation_answers(self, k: int, train_pool: list[dict]) -> list[dict]:
        def produce(folder: Path):
            calls, asked = self._ask_teacher(train_pool)
            rows = [{**row, "teacher_answer": self.answers.get(normalise(row["prompt"]), "")} for row in train_pool]
            write_jsonl_atomic(folder / "records.jsonl", rows)
            return {"records": len(rows), "calls": {"teacher": calls}, "asked": {"teacher": asked},
                    "protocol": {"teacher": len(train_pool)},
                    "empty_answers": sum(not r["teacher_answer"].strip() for r in rows)}

        path, _ = self._stage(f"iter{k}/imitation_answers", produce)
        rows = read_jsonl(path / "records.jsonl")
        self._learn_answers(rows)
        return rows

    def train(self, k: int, rows: list[dict]) -> None:
        """Iteration k's imitation: fine-tune on the teacher's answers through the engine. All iterations share
        one optimizer state and one learning-rate schedule spanning the budget's steps: iteration k continues
        from the optimizer state iteration k-1 kept (a fresh AdamW per iteration would restart the warm-up and
        decay, training with a larger learning rate than every other method)."""
        from stillroom.training import budget_value, ids_digest, stage_settings

        plan, job = self.plan, self.job
        warmup_ratio = budget_value(job, "warmup_ratio", None, 0.0)  # of all iterations' steps: one warm-up
        records = [{"id": r.get("id"), "prompt": r["prompt"], "target": r["teacher_answer"]}
                   for r in rows if r["teacher_answer"].strip()]
        stage = stage_settings(job, f"iter{k}/train")
        previous = job.stage_path(f"iter{k - 1}/train") / OPTIMIZER_STATE
        last = k == plan.iterations

        def fit(student: Student, folder: Path):
            if not records:
                return {"records": 0, "steps": 0, "optimizer_steps": 0, "skipped": "no teacher answers to train on"}
            result = student.fit(records, steps=plan.steps[k - 1], batch_size=plan.batch_size,
                                 learning_rate=plan.learning_rate, seed=stage.seed, max_length=self.cfg.max_length,
                                 warmup_ratio=warmup_ratio, folder=folder, checkpoint_dir=stage.checkpoint_dir,
                                 checkpoint_steps=stage.checkpoint_steps, report_to=stage.report_to,
                                 description=f"{job.label} iter{k} train", total_steps=sum(plan.steps),
                                 continue_from=previous if k > 1 and previous.is_dir() else None,
                                 keep_state=None if last else folder / OPTIMIZER_STATE)
            summary = {key: value for key, value in result.items() if key != "losses"}
            return {**summary, **ids_digest(records), "records": len(records), "planned_steps": plan.steps[k - 1],
                    "batch_size": plan.batch_size, "learning_rate": plan.learning_rate}

        job.student = job.model_stage(f"iter{k}/train", fit)

    def heldout(self, k: int) -> None:
        """The student of iteration ``k`` on the held-out evaluator (never the test split), scored through the
        job like every other evaluation; the dynamics read the chosen metric back (``heldout_value``)."""
        evaluator = self.method.heldout
        if evaluator is not None:
            self.job.evaluate(self.job.student, evaluator, f"iter{k}/heldout", name=f"{self.job.label}@iter{k}")
            self.heldout_value(k)  # an unknown heldout_metric fails now, not when the dynamics are drawn

    def heldout_value(self, k: int) -> float | None:
        """The ``heldout_metric`` (default: the first metric) of iteration ``k``'s held-out evaluation."""
        result = self.job.stage_path(f"iter{k}/heldout") / "result.json"
        if not self.job.stage_metrics(f"iter{k}/heldout") or not result.exists():
            return None
        metrics = json.loads(result.read_text())["metrics"]
        wanted = self.cfg.heldout_metric
        chosen = next((m for m in metrics if wanted is None or m["metric"] == wanted), None)
        if chosen is None:
            raise UserError(f"the held-out evaluator has no metric {wanted!r}; it reports "
                            f"{', '.join(m['metric'] for m in metrics)}", f"methods[{self.job.label}].heldout_metric")
        return chosen["value"]

    def discrimination(self, k: int, cache_pool: list[dict]) -> list[dict]:
        job, cfg = self.job, self.cfg

        def produce(folder: Path):
            teacher_calls, asked_teacher = self._ask_teacher(cache_pool)
            student_meter = Meter(endpoint_of(job.student))
            sampling = cfg.student_sampling
            requests = [GenerationRequest(messages=[{"role": "user", "content": row["prompt"]}],
                                          temperature=sampling.temperature, top_p=sampling.top_p,
                                          max_tokens=sampling.max_tokens,
                                          seed=job.seed if sampling.temperature > 0 else None) for row in cache_pool]
            student_answers = [c[0].text if c else "" for c in
                               job.student.generate(requests, description="lion student answers")]
            student_calls = student_meter.delta()

            pairs = []
            for row, student_answer in zip(cache_pool, student_answers):
                teacher_answer = self.answers.get(normalise(row["prompt"]), "")
                pairs.append((row, teacher_answer, student_answer, pair_key(row["prompt"], teacher_answer, student_answer)))
            new = {}
            for row, teacher_answer, student_answer, key in pairs:
                if key not in self.reviews and key not in new:
                    new[key] = (row, teacher_answer, student_answer)
            referee_meter = Meter(endpoint_of(self.method.referee))
            judged = self._judge(list(new.values()))
            referee_calls = referee_meter.delta()
            for key, review in zip(new, judged):
                self.reviews[key] = review

            rows = []
            for row, teacher_answer, student_answer, key in pairs:
                review = self.reviews[key]
                combined = combine_orders(_judgment(review["forward"]), _judgment(review["backward"]))
                rows.append({**row, "teacher_answer": teacher_answer, "student_answer": student_answer,
                             "pair_key": key, "review_reused": key not in new,
                             "forward": review["forward"], "backward": review["backward"],
                             "raw": review.get("raw"), "orders": combined.orders,
                             "teacher_score": combined.teacher, "student_score": combined.student,
                             "d": combined.diff, "label": classify(combined.diff, cfg.tau)})
            rows = sort_reviewed(rows)
            write_jsonl_atomic(folder / "records.jsonl", rows)
            scored = [r for r in rows if r["label"] != "failed"]
            hard = sum(r["label"] == "hard" for r in rows)
            mean = (lambda key: sum(r[key] for r in scored) / len(scored) if scored else None)
            return {"records": len(rows), "cache_pool": len(rows), "hard": hard, "easy": len(scored) - hard,
                    "referee_failures": len(rows) - len(scored),
                    "single_order": sum(r["orders"] == 1 for r in rows),
                    "hard_fraction": hard / len(scored) if scored else None, "mean_d": mean("d"),
                    "teacher_score": mean("teacher_score"), "student_score": mean("student_score"),
                    "pairs_judged": len(new), "pairs_reused": len(rows) - len(new),
                    "calls": {"teacher": teacher_calls, "student": student_calls, "referee": referee_calls},
                    "asked": {"teacher": asked_teacher, "student": len(cache_pool), "referee": 2 * len(new)},
                    "protocol": {"teacher": len(cache_pool), "student": len(cache_pool), "referee": 2 * len(cache_pool)}}

        path, _ = self._stage(f"iter{k}/discrimination", produce)
        rows = read_jsonl(path / "records.jsonl")
        self._learn_answers(rows)
        for row in rows:
            self.reviews.setdefault(row["pair_key"], {"forward": row["forward"], "backward": row["backward"],
                                                      "raw": row.get("raw")})
        return rows

    def _judge(self, pairs: list[tuple[dict, str, str]]) -> list[dict[str, Any]]:
        """Both orders of every pair in one call to the referee; per pair the scores of each order (None where
        the referee failed after its own re-asks) and the raw reviews."""
        if not pairs:
            return []
        items = []
        for row, teacher_answer, student_answer in pairs:
            reference = str(row["answer"]) if self.cfg.referee_reference and row.get("answer") is not None else None
            for answers in ([teacher_answer, student_answer], [student_answer, teacher_answer]):
                items.append(JudgeItem(question=row["prompt"], answers=answers, reference=reference, id=row.get("id")))
        judgments = self.method.referee.judge(items)
        if len(judgments) != len(items):
            raise RuntimeError(f"the referee returned {len(judgments)} judgments for {len(items)} items")
        out = []
        for i in range(len(pairs)):
            forward, backward = judgments[2 * i], judgments[2 * i + 1]
            out.append({"forward": _scores_of(forward), "backward": _scores_of(backward),
                        "raw": [list(forward.raw), list(backward.raw)]})
        return out

    def generation(self, k: int, reviewed: list[dict], cache_pool: list[dict]) -> list[dict]:
        job, cfg = self.job, self.cfg
        wanted = self.plan.generate_in(k)

        def produce(folder: Path):
            generator = self.method.generator
            hard = [r for r in reviewed if r["label"] == "hard"]
            # A pair the referee never scored counts as easy, as in Lion, where a review that never parses
            # scores [-1, -1] in both orders and so d = 0 (the failures are reported, not hidden).
            easy = [r for r in reviewed if r["label"] != "hard"]
            failed = sum(r["label"] == "failed" for r in reviewed)
            if reviewed and failed == len(reviewed):
                job.run_dir.event("lion_warning", method=job.label, iteration=k,
                                  message=f"the referee scored none of the {failed} pairs; every seed is easy")
            counts = dict(zip(("hard", "easy"), hard_easy_counts(wanted, self.method.ratio, len(hard), len(easy))))
            novelty = NoveltyFilter(cfg.rouge_threshold)
            novelty.add(r["prompt"] for r in cache_pool)
            avoid = generator.avoid_keys(self.test)
            meter = Meter(generator.writer_endpoint())
            accepted, rejected, attempts = [], [], {"hard": 0, "easy": 0}
            reasons: dict[str, int] = {}
            for mode, seeds in (("hard", hard), ("easy", easy)):
                want = counts[mode]
                limit = math.ceil(cfg.max_attempts * want)
                rng = random.Random(f"lion:{job.seed}:{k}:{mode}")
                got = 0
                while got < want and attempts[mode] < limit:
                    batch = min(want - got, limit - attempts[mode])
                    asks = [{"seed": rng.choice(seeds), "mode": mode,
                             "key": f"lion:{job.seed}:iter{k}:{mode}:{attempts[mode] + i}"} for i in range(batch)]
                    attempts[mode] += batch
                    for candidate in generator.propose(asks):
                        reason = candidate.get("rejected") or generator.rejects(candidate, avoid)
                        best, close = None, []
                        if reason is None:
                            kept, best, close = novelty.offer(candidate["prompt"])
                            if not kept:
                                reason = f"ROUGE-L >= {cfg.rouge_threshold}"
                        if reason is None and got < want:
                            got += 1
                            accepted.append({"id": f"{job.label}-iter{k}-{mode}-{got:05d}", **candidate,
                                             "max_rougeL": round(best or 0.0, 4),
                                             "most_similar": {text: round(score, 4) for text, score in close}})
                        else:
                            reason = reason or "enough already"
                            reasons[reason] = reasons.get(reason, 0) + 1
                            rejected.append({**candidate, "reason": reason, "max_rougeL": best})
            write_jsonl_atomic(folder / "records.jsonl", accepted)
            write_jsonl_atomic(folder / "rejected.jsonl", rejected)
            attempted = attempts["hard"] + attempts["easy"]
            return {"records": len(accepted), "wanted": wanted, "wanted_hard": counts["hard"],
                    "wanted_easy": counts["easy"], "generated": len(accepted),
                    "generated_hard": sum(r["mode"] == "hard" for r in accepted),
                    "generated_easy": sum(r["mode"] == "easy" for r in accepted),
                    "shortfall": wanted - len(accepted), "attempts": attempted, "rejections": reasons,
                    "hard_seeds": len(hard), "easy_seeds": len(easy), "failed_as_easy": failed,
                    "calls": {"generator": meter.delta()}, "asked": {"generator": attempted},
                    "protocol": {"generator": attempted}}

        path, _ = self._stage(f"iter{k}/generation", produce)
        return read_jsonl(path / "records.jsonl")

    # -- one iteration and the dynamics -----------------------------------------------------------------------

    def iteration(self, k: int) -> None:
        train_pool, cache_pool = self.pools(k)
        answered = self.imitation_answers(k, train_pool)
        self.train(k, answered)
        self.heldout(k)
        last = k == self.plan.iterations
        if last and not self.cfg.final_discrimination:
            return
        reviewed = self.discrimination(k, cache_pool)
        if not last:
            self.generation(k, reviewed, cache_pool)

    def _metrics(self, k: int, stage: str) -> dict[str, Any]:
        return self.job.stage_metrics(f"iter{k}/{stage}")

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for k in range(1, self.plan.iterations + 1):
            pools = self._metrics(k, "pools")
            if not pools:
                break
            imitation, train = self._metrics(k, "imitation_answers"), self._metrics(k, "train")
            disc, gen = self._metrics(k, "discrimination"), self._metrics(k, "generation")
            row: dict[str, Any] = {"iteration": k, "train_pool": pools.get("train_pool"),
                                   "cache_pool": pools.get("cache_pool"), "steps": train.get("steps"),
                                   "train_loss": train.get("loss"), "heldout": self.heldout_value(k),
                                   "teacher_answered": (imitation.get("asked") or {}).get("teacher")}
            for key in ("hard", "easy", "referee_failures", "hard_fraction", "mean_d", "teacher_score",
                        "student_score", "pairs_judged", "pairs_reused"):
                row[key] = disc.get(key)
            row["generated"] = gen.get("generated")
            row["generation_attempts"] = gen.get("attempts")
            tokens = cost = 0.0
            for role in dynamics.ROLES:
                calls = asked = protocol = 0
                role_tokens = 0
                for metrics in (imitation, disc, gen):
                    found = (metrics.get("calls") or {}).get(role) or {}
                    calls += found.get("requests", 0)
                    role_tokens += found.get("prompt_tokens", 0) + found.get("completion_tokens", 0)
                    cost += found.get("cost", 0.0) or 0.0
                    asked += (metrics.get("asked") or {}).get(role, 0)
                    protocol += (metrics.get("protocol") or {}).get(role, 0)
                row[f"calls_{role}"], row[f"asked_{role}"], row[f"protocol_{role}"] = calls, asked, protocol
                row[f"tokens_{role}"] = role_tokens
                tokens += role_tokens
            row["tokens"], row["cost"] = int(tokens), round(cost, 6)
            rows.append({key: value for key, value in row.items() if value is not None})
        return rows

    def publish(self) -> None:
        """Refresh the dynamics files and ``job.info`` from the finished stages (also after a resume)."""
        rows = self.table()
        totals = {}
        for role in dynamics.ROLES:
            totals[f"calls_{role}"] = sum(r.get(f"calls_{role}", 0) for r in rows)
            totals[f"protocol_{role}"] = sum(r.get(f"protocol_{role}", 0) for r in rows)
        plan = {"iterations": self.plan.iterations, "pool_sizes": list(self.plan.pool_sizes),
                "steps": list(self.plan.steps), "batch_size": self.plan.batch_size,
                "learning_rate": self.plan.learning_rate, "teacher_examples": self.plan.teacher_examples}
        self.job.info["iterations"] = [{key: row[key] for key in LEADERBOARD_FIELDS if key in row} for row in rows]
        self.job.info["lion"] = {"plan": plan, "totals": totals, "tau": self.cfg.tau,
                                 "hard_easy_ratio": str(self.cfg.hard_easy_ratio)}
        dynamics.write(self.folder, rows, {"plan": plan, "totals": totals},
                       f"lion learning dynamics ({self.job.label})")


def _scores_of(judgment: Judgment) -> list[float] | None:
    if judgment.failed or not judgment.scores or len(judgment.scores) < 2 or -1 in judgment.scores[:2]:
        return None
    return [float(judgment.scores[0]), float(judgment.scores[1])]


def _judgment(scores: list[float] | None) -> Judgment | None:
    return None if scores is None else Judgment(scores=scores)
