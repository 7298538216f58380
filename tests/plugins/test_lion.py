"""The lion method: swap averaging and the tau split, generation filters on real Alpaca seeds, pool bookkeeping,
resume without repeated calls, the offline arithmetic roles, and an end-to-end run over `stillroom serve`."""

from __future__ import annotations

import hashlib
import json
import random
import re
import types
import urllib.request
from pathlib import Path

import pytest

from pydantic import Field

from stillroom import Completion, ComponentConfig, Endpoint, Judgment, UserError, build, hookimpl, read_jsonl
from stillroom.plugins.lion.arithmetic import parse_problem, score_answer, stated_answer
from stillroom.plugins.lion.pools import (NoveltyFilter, classify, combine_orders, hard_easy_counts, lion_post_filter,
                                          make_plan, parse_ratio, update_pools)
from stillroom.testing import served_model

ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    from stillroom import paths

    root = paths.data_root()
    if root is None or not (Path(root) / "alpaca" / "seed_tasks.jsonl").exists():
        pytest.skip("needs the local data mirror (STILLROOM_DATA) with alpaca/ and lion/")
    return Path(root)


def seed_instructions() -> list[str]:
    return [json.loads(line)["instruction"] for line in (data_root() / "alpaca" / "seed_tasks.jsonl").open()]


# ---------------------------------------------------------------------------------------------------------
# Swap averaging, the tau split, the plan.


def test_position_swap_averaging_and_tau_split():
    # teacher is Assistant 1 in the first review and Assistant 2 in the second; the referee favours position 1
    pair = combine_orders(Judgment(scores=[9, 5]), Judgment(scores=[6, 7]))
    assert (pair.teacher, pair.student, pair.orders) == (8.0, 5.5, 2)
    assert pair.diff == 2.5 and classify(pair.diff, 1.0) == "hard"
    # position bias alone (each answer wins when shown first) cancels out: d = 0, easy
    biased = combine_orders(Judgment(scores=[8, 6]), Judgment(scores=[8, 6]))
    assert biased.diff == 0 and classify(biased.diff, 1.0) == "easy"
    # exactly tau is hard, just below is easy
    assert classify(1.0, 1.0) == "hard" and classify(0.999, 1.0) == "easy"
    # an order the referee failed on is left out; both failed: a failure, never a crash
    single = combine_orders(Judgment(scores=[-1, -1], failed=True), Judgment(scores=[3, 7]))
    assert (single.teacher, single.student, single.orders) == (7.0, 3.0, 1)
    failed = combine_orders(Judgment(scores=[-1, -1], failed=True), None)
    assert failed.failed and failed.diff is None and classify(failed.diff, 1.0) == "failed"


def test_plan_splits_the_shared_budget():
    plan = make_plan(iterations=3, total_examples=500, initial_pool=None, per_iteration=None, available=2000,
                     steps=300, batch_size=32, learning_rate=3e-3, location="m")
    assert plan.pool_sizes == (250, 125, 125) and plan.teacher_examples == 500
    assert plan.steps == (150, 75, 75) and plan.generate_in(1) == 125 and plan.generate_in(3) == 0
    odd = make_plan(iterations=3, total_examples=64, initial_pool=30, per_iteration=None, available=120,
                    steps=20, batch_size=16, learning_rate=1e-3, location="m")
    assert sum(odd.pool_sizes) == 64 and sum(odd.steps) == 20 and odd.pool_sizes[0] == 30
    with pytest.raises(UserError, match="train_examples"):
        make_plan(iterations=3, total_examples=500, initial_pool=200, per_iteration=100, available=2000,
                  steps=300, batch_size=32, learning_rate=1e-3, location="m")
    with pytest.raises(UserError, match="training records"):
        make_plan(iterations=2, total_examples=500, initial_pool=None, per_iteration=10, available=100,
                  steps=300, batch_size=32, learning_rate=1e-3, location="m")
    cache = [{"id": "a", "prompt": "Name a colour."}, {"id": "b", "prompt": "Name a fruit."}]
    train, grown = update_pools(cache, [{"id": "c", "prompt": "name a  COLOUR."}, {"id": "d", "prompt": "Name a tree."},
                                        {"id": "e", "prompt": "Name a tree."}])
    assert [r["id"] for r in train] == ["d"] and [r["id"] for r in grown] == ["a", "b", "d"]
    assert parse_ratio("1:1") == 1.0 and parse_ratio("3:1") == 3.0 and parse_ratio(2) == 2.0
    assert hard_easy_counts(10, 1.0, 5, 5) == (5, 5) and hard_easy_counts(10, 3.0, 5, 5) == (8, 2)
    assert hard_easy_counts(10, 1.0, 0, 5) == (0, 10) and hard_easy_counts(10, 1.0, 4, 0) == (10, 0)


# ---------------------------------------------------------------------------------------------------------
# Generation filters on real Alpaca seed instructions.


def test_post_filters_and_rouge_filter_on_alpaca_seeds():
    from rouge_score import rouge_scorer

    seeds = seed_instructions()
    assert len(seeds) == 175
    reasons = {text: lion_post_filter(text, "stop") for text in seeds}
    rejected = {text: reason for text, reason in reasons.items() if reason}
    assert rejected == {"Explain human's behavior.": "3 words or fewer", "Complete the lyrics.": "3 words or fewer"}
    assert lion_post_filter("Follow this Instruction: " + seeds[5], "stop") == "mentions 'instruction'"
    assert lion_post_filter(seeds[0], "length") == "cut off at max_tokens"
    assert lion_post_filter("- Give three tips for a long walk.", "stop") == "starts with punctuation"
    assert lion_post_filter("Écris une lettre à un ami proche.", "stop") == "starts with a non-ASCII character"

    pool, fresh = seeds[:150], seeds[150:]
    novelty = NoveltyFilter(0.7)
    novelty.add(pool)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def brute(text, against):
        return max(scorer.score(other, text)["rougeL"].fmeasure for other in against)

    # an instruction already in the Cache Pool, and a one-word paraphrase of one, are not novel
    kept_dup, best, close = novelty.offer(pool[3])
    assert not kept_dup and best == pytest.approx(1.0) and close[0][0] == pool[3]
    paraphrase = pool[10].replace(pool[10].split()[-1], "today.")
    assert brute(paraphrase, pool) >= 0.7 and not novelty.offer(paraphrase)[0]
    # the pruned filter decides exactly as scoring every pair with rouge-score would
    accepted = []
    for text in fresh:
        expected = brute(text, pool + accepted) < 0.7
        kept_it, best, _ = novelty.offer(text)
        assert kept_it == expected
        if kept_it:
            accepted.append(text)
    assert accepted
    # accepted candidates join the comparison pool at once: offering one again is rejected
    assert not novelty.offer(accepted[0])[0]


def test_lion_llm_generator_requests_and_filters(stillroom_host):
    from stillroom import Context

    root = data_root()
    context = Context(cache=None, endpoints={"gen": Scripted(Scripted.Config(role="generator"), None)},
                      data_root=root)
    context.endpoints["gen"].context = context
    generator = build("generator", "lion_llm", context=context, endpoint="gen", prompts="lion/prompts.json")
    seed = {"id": "s1", "prompt": "Give three tips for staying healthy."}
    request = generator.request(seed["prompt"], "hard", "k1")
    user = request.messages[-1]["content"]
    original = json.loads((root / "lion" / "prompts.json").read_text())["generator"]
    assert user == original["hard_prompt"] + "\n" + seed["prompt"] + "\n\n#Created Instruction#:"
    assert request.messages[0]["content"] == "You are a helpful assistant."
    assert request.max_tokens == 24 and request.temperature == 1.0  # 4 x 6 words (floor 16)
    assert generator.request(seed["prompt"], "easy", "k1").messages[-1]["content"].startswith(original["easy_prompt"])
    candidates = generator.propose([{"seed": seed, "mode": "hard", "key": f"k{i}"} for i in range(4)])
    assert len({c["prompt"] for c in candidates}) == 4 and all(generator.rejects(c, set()) is None for c in candidates)
    assert generator.rejects({"prompt": candidates[0]["prompt"], "finish_reason": "length"}, set()) == "cut off at max_tokens"
    avoid = generator.avoid_keys([{"prompt": candidates[1]["prompt"].upper()}])
    assert generator.rejects(candidates[1], avoid) == "a test-split instruction"
    ours = build("generator", "lion_llm", context=context, endpoint="gen")
    assert "#Given Instruction#" not in ours.request(seed["prompt"], "hard", "k").messages[-1]["content"]


# ---------------------------------------------------------------------------------------------------------
# The offline arithmetic roles.


def test_arithmetic_referee_and_variations_read_the_synthetic_format(stillroom_host):
    data = build("generator", "arithmetic", train_size=40, test_size=40, seed=3,
                 difficulty={"operations": 2, "operators": ["+", "-", "*"], "word_problems": 0.5}).build_dataset()
    referee = build("judge", "arithmetic_referee")
    for row in data["train"] + data["test"]:
        problem = parse_problem(row["prompt"])
        assert problem is not None and str(problem.answer) == row["answer"], row["prompt"]
        assert stated_answer(row["target"]) == row["answer"]
    row = data["train"][0]
    wrong = row["target"].replace(f"The answer is {row['answer']}.", f"The answer is {int(row['answer']) + 1}.")
    judged = referee.judge([build_item(row["prompt"], [row["target"], wrong]),
                            build_item(row["prompt"], ["no idea", row["target"]]),
                            build_item("Write a haiku about rain.", ["a", "b"])])
    assert judged[0].scores[0] == 10 and judged[0].scores[0] - judged[0].scores[1] >= 5
    assert judged[1].scores == [1.0, 10.0]
    assert judged[2].failed and judged[2].scores == [-1.0, -1.0]
    assert score_answer("3+4=8. The answer is 8.", "7", [(3, "+", 4, 7)])[0] == 2.0  # stated only

    variations = build("generator", "arithmetic_variations")  # operators and operands: the data's
    avoid = variations.avoid_keys(data["test"])
    asks = [{"seed": seed, "mode": mode, "key": f"{mode}{i}"} for i, seed in enumerate(data["train"][:20])
            for mode in ("hard", "easy")]
    out = variations.propose(asks)
    assert out == variations.propose(asks)  # the draw key fixes the problem
    for ask, candidate in zip(asks, out):
        seed, new = parse_problem(ask["seed"]["prompt"]), parse_problem(candidate["prompt"])
        assert new is not None and str(new.answer) == candidate["answer"] and min(new.values()) >= 0
        assert len(new.steps) == len(seed.steps) and new.story == seed.story
        if ask["mode"] == "hard":
            assert [op for op, _ in new.steps] == [op for op, _ in seed.steps]
            assert [len(str(n)) for op, n in new.steps if op != "*"] == [len(str(n)) for op, n in seed.steps if op != "*"]
        else:
            assert [op for op, _ in new.steps] != [op for op, _ in seed.steps]
    clash = {**out[0], "expression": next(iter(avoid))}
    assert variations.rejects(clash, avoid) == "a test-split problem"
    with pytest.raises(UserError, match="inside the lion method"):
        variations.build_dataset()


def build_item(question, answers):
    from stillroom import JudgeItem

    return JudgeItem(question=question, answers=answers)


# ---------------------------------------------------------------------------------------------------------
# Scripted endpoints for the runs: a teacher, a referee (Lion's review format, a position bias, unparseable
# reviews) and a generator, each counting what it is asked and what reaches it.

ASKED: dict[str, int] = {}
SENT: dict[str, int] = {}
KILL_AFTER: list[str] = []
WORDS = ("river mountain garden recipe budget planet museum violin winter harbor robot letter bridge forest "
         "market lantern desert poem castle engine island puzzle orchard comet meadow ladder canyon pillow "
         "tunnel mirror compass festival glacier kettle library magnet notebook ocean parade quartz saddle "
         "telescope umbrella valley whistle yogurt zebra anchor blossom candle dolphin").split()


def instruction_hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def teacher_strength(instruction: str) -> float:
    """The scripted referee's score of the teacher on an instruction: 8 (hard: d = 4) or 4.5 (easy: d = 0.5)."""
    return 8.0 if instruction_hash(instruction) % 2 == 0 else 4.5


class Scripted(Endpoint):
    """A deterministic endpoint playing one Lion role from the request text alone."""

    name = "scripted"

    class Config(ComponentConfig):
        role: str = Field("teacher", description="teacher, referee or generator")

    def identity(self):
        return {"kind": "scripted", "role": self.config.role}

    def generate(self, requests, *, description=None):
        ASKED[self.config.role] = ASKED.get(self.config.role, 0) + len(requests)
        return super().generate(requests, description=description)

    def _generate(self, requests):
        SENT[self.config.role] = SENT.get(self.config.role, 0) + len(requests)
        return [[Completion(text=self.answer(r, i), finish_reason="stop", prompt_tokens=10, completion_tokens=5)
                 for i in range(r.n)] for r in requests]

    def answer(self, request, index: int) -> str:
        user = request.messages[-1]["content"]
        role = self.config.role
        if role == "teacher":
            return f"Teacher: a careful answer to {user[:40]}"
        if role == "generator":
            rng = random.Random(request.seed)
            return "Describe " + " ".join(rng.sample(WORDS, 8)) + " in detail."
        instruction = re.search(r"\[Instruction\]\n(.*?)\n\n\[The Start", user, re.S).group(1)
        first = re.search(r"Assistant 1's Answer\]\n(.*?)\n\[The End of Assistant 1", user, re.S).group(1)
        h = instruction_hash(instruction)
        if h % 7 == 0 or (h % 5 == 0 and index == 0):  # never parseable / parseable on the re-ask
            return "Both answers have merits.\nI cannot decide."
        teacher, student = teacher_strength(instruction), 4.0
        one, two = (teacher, student) if first.startswith("Teacher:") else (student, teacher)
        return f"Evaluation evidence: scripted.\nScore of the Assistant 1: {one + 1}\nScore of the Assistant 2: {two}"


@hookimpl
def _register_endpoints(register):
    register(Scripted)


@hookimpl
def _stage_finished(run, stage, metrics):
    if stage in KILL_AFTER:
        KILL_AFTER.remove(stage)
        raise KeyboardInterrupt(f"killed after {stage}")


def scripted_host():
    from stillroom.plugin_manager import make_host

    module = types.ModuleType("lion_scripted")
    module.stillroom_register_endpoints = _register_endpoints
    module.stillroom_stage_finished = _stage_finished
    return make_host(distributions={"stillroom"}, modules={"lion_scripted": module})


@pytest.fixture
def scripted(stillroom_env):
    from stillroom.plugin_manager import use_host

    host = scripted_host()
    previous = use_host(host)
    ASKED.clear()
    SENT.clear()
    KILL_AFTER.clear()
    yield host
    use_host(previous)


def lion_spec(root: Path, student_dir: Path, *, referee_endpoint: str = "ref", **lion) -> dict:
    lion_dir = root / "lion"
    return {
        "name": "lion-test", "seed": 0, "output_dir": "runs",
        "evaluate": {"teacher": False, "base": False},
        "endpoints": {"teach": {"kind": "scripted", "role": "teacher"},
                      "ref": {"kind": "scripted", "role": "referee"},
                      "gen": {"kind": "scripted", "role": "generator"}},
        "teacher": {"kind": "api", "endpoint": "teach"},
        "student": {"kind": "hf", "model": str(student_dir), "device": "cpu"},
        "data": {"kind": "file", "path": "alpaca/seed_tasks.jsonl", "test_size": 10, "seed": 0},
        "budget": {"train_examples": 40, "steps": 6, "batch_size": 4, "learning_rate": 1e-3},
        "methods": [{
            "kind": "lion", "iterations": 3, "instructions_per_iteration": 8,
            "referee": {"kind": "llm", "endpoint": referee_endpoint, "protocol": "pair_scores", "retries": 2,
                        "prompt_file": str(lion_dir / "referee_prompt_template.txt"),
                        "system_prompt": "@referee_system_prompt.txt",
                        "template_vars": {"prompt": "@referee_default_prompt.txt"},
                        "score_location": "last_two_lines", "max_tokens": 64},
            "instruction_generator": {"kind": "lion_llm", "endpoint": "gen", "prompts": "lion/prompts.json"},
            "student_sampling": {"max_tokens": 8}, "teacher_sampling": {"max_tokens": 32},
            **lion}],
        "evaluators": [{"kind": "exact_match", "limit": 2, "max_tokens": 4, "rouge": False}],
    }


def run_spec(tmp_path: Path, spec: dict, host, *, resume: bool = False):
    from stillroom.runs import execute

    path = tmp_path / "lion.json"
    path.write_text(json.dumps(spec))
    return execute(path, resume=resume, host=host)


def test_pools_reviews_and_resume_without_repeated_calls(scripted, tmp_path, tiny_model_dir):
    root = data_root()
    spec = lion_spec(root, tiny_model_dir)
    KILL_AFTER.append("methods/lion/iter2/imitation_answers")
    with pytest.raises(KeyboardInterrupt):
        run_spec(tmp_path, spec, scripted)
    first_asked, first_sent = dict(ASKED), dict(SENT)
    # iteration 1: the teacher answered the 24-instruction pool once (not again in discrimination); the
    # referee reviewed 24 pairs in both orders, re-asking the unparseable ones; 8 instructions were generated
    assert first_sent["teacher"] == 24 + 8 and first_asked["teacher"] == 24 + 8
    assert first_sent["generator"] >= 8

    ASKED.clear()
    SENT.clear()
    run = run_spec(tmp_path, spec, scripted, resume=True)
    # the resumed run redid nothing: the teacher was asked only for iteration 3's new Train Pool (not for
    # iteration 2's Cache Pool, answered before the kill) and the generator only for iteration 2's generation
    assert ASKED["teacher"] == SENT["teacher"] == 8 and first_sent["teacher"] + SENT["teacher"] == 40
    assert SENT["generator"] >= 8 and ASKED["generator"] == SENT["generator"]
    events = [json.loads(line) for line in (run.dir.root / "events.jsonl").open()]
    skipped = {e["stage"] for e in events if e["event"] == "stage_skipped"}
    assert {"methods/lion/iter1/train", "methods/lion/iter1/discrimination", "methods/lion/iter1/generation",
            "methods/lion/iter2/imitation_answers"} <= skipped

    folder = run.dir.stage_path("methods/lion")
    pools = {k: (read_jsonl(folder / f"iter{k}/pools/train_pool.jsonl"),
                 read_jsonl(folder / f"iter{k}/pools/cache_pool.jsonl")) for k in (1, 2, 3)}
    generated = {k: read_jsonl(folder / f"iter{k}/generation/records.jsonl") for k in (1, 2)}
    assert [len(pools[k][0]) for k in (1, 2, 3)] == [24, 8, 8]
    assert [len(pools[k][1]) for k in (1, 2, 3)] == [24, 32, 40]
    for k in (1, 2):
        # the new instructions replace the Train Pool and are added to the Cache Pool
        assert [r["prompt"] for r in pools[k + 1][0]] == [r["prompt"] for r in generated[k]]
        assert [r["prompt"] for r in pools[k + 1][1]] == [r["prompt"] for r in pools[k][1] + generated[k]]
        modes = [r["mode"] for r in generated[k]]
        assert modes.count("hard") == 4 and modes.count("easy") == 4  # r = 1:1
    assert {r["prompt"] for r in pools[1][0]} == {r["prompt"] for r in pools[1][1]}

    # swap averaging on the scripted reviews: the referee's +1 for position 1 cancels, d is 4 or 0.5
    reviewed = read_jsonl(folder / "iter1/discrimination/records.jsonl")
    for row in reviewed:
        h = instruction_hash(row["prompt"])
        if h % 7 == 0:
            assert row["label"] == "failed" and row["d"] is None
            continue
        assert row["orders"] == 2 and row["student_score"] == 4.5
        assert row["teacher_score"] == teacher_strength(row["prompt"]) + 0.5
        assert row["label"] == ("hard" if teacher_strength(row["prompt"]) == 8.0 else "easy")
    metrics = json.loads((folder / "iter1/discrimination/stage.json").read_text())
    assert metrics["pairs_judged"] == 24 and metrics["asked"]["referee"] == 48
    assert metrics["protocol"] == {"teacher": 24, "student": 24, "referee": 48}
    retried = sum(1 for r in reviewed if instruction_hash(r["prompt"]) % 7 and instruction_hash(r["prompt"]) % 5 == 0)
    never = sum(1 for r in reviewed if instruction_hash(r["prompt"]) % 7 == 0)
    assert metrics["referee_failures"] == never
    assert metrics["calls"]["referee"]["requests"] == 48 + 2 * retried + 2 * 2 * never  # two re-asks per failed review

    # the leaderboard gets the per-iteration numbers; dynamics files are written
    dyn = json.loads((folder / "dynamics.json").read_text())
    assert [r["iteration"] for r in dyn["iterations"]] == [1, 2, 3]
    assert dyn["iterations"][0]["protocol_teacher"] == 48 and dyn["iterations"][0]["asked_teacher"] == 24
    assert dyn["iterations"][1]["asked_teacher"] == 8 and dyn["iterations"][1]["protocol_teacher"] == 8 + 32
    assert dyn["plan"]["pool_sizes"] == [24, 8, 8] and sum(dyn["plan"]["steps"]) == 6
    assert (folder / "dynamics.svg").read_text().startswith("<svg") and "| it |" in (folder / "dynamics.md").read_text()
    from stillroom.results import ResultsStore

    with ResultsStore.default() as store:
        rows = [r for r in store.rows(run_id=run.id, latest=False) if r.get("method") == "lion"]
    assert rows and [p["iteration"] for p in rows[0]["extra"]["iterations"]] == [1, 2, 3]
    assert 0 <= rows[0]["extra"]["iterations"][0]["hard_fraction"] <= 1


def test_each_role_is_metered_through_the_endpoint_it_declares(stillroom_host, tiny_model_dir):
    from stillroom import Context
    from stillroom.plugins.lion.method import endpoint_of

    referee_endpoint = Scripted(Scripted.Config(role="referee"), None)
    context = Context(cache=None, endpoints={"ref": referee_endpoint}, data_root=None)
    llm = build("judge", "llm", context=context, endpoint="ref", calibration="mec")
    assert endpoint_of(llm) is referee_endpoint and llm.calibration == "mec"
    # an llm judge without an endpoint has nothing to meter (judging itself reports the missing endpoint)
    assert endpoint_of(build("judge", "llm", context=context)) is None
    rule = build("judge", "arithmetic_referee", context=context)
    assert endpoint_of(rule) is None and rule.calibration == "none"  # the Judge role's defaults
    student = build("student", "hf", context=context, model=str(tiny_model_dir), device="cpu")
    assert endpoint_of(student) is student.endpoint and endpoint_of(student).model is student.model
    assert endpoint_of(None) is None


def test_lion_needs_an_instruction_writer_and_a_known_referee(scripted, tmp_path, tiny_model_dir):
    from stillroom.specs import SpecError

    root = data_root()
    bad = lion_spec(root, tiny_model_dir)
    bad["methods"][0]["referee"] = {"kind": "arithmetic_refere"}
    with pytest.raises(SpecError, match="arithmetic_referee"):
        run_spec(tmp_path, bad, scripted)
    wrong = lion_spec(root, tiny_model_dir, instruction_generator={"kind": "arithmetic", "train_size": 5})
    with pytest.raises(UserError, match="cannot write instructions"):
        run_spec(tmp_path, wrong, scripted)
    doubled = lion_spec(root, tiny_model_dir)
    doubled["methods"][0]["referee"]["calibration"] = "bpc"
    with pytest.raises(UserError, match="both answer orders"):
        run_spec(tmp_path, doubled, scripted)
    assert not ASKED  # every check fails before a single model call


# ---------------------------------------------------------------------------------------------------------
# End to end: all three LLM roles served by `stillroom serve` on loopback.


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def served(tiny_teacher_dir, tmp_path):
    with served_model(tiny_teacher_dir, log=tmp_path / "serve.log", device="cpu", name="tiny") as url:
        yield url


def test_end_to_end_two_iterations_over_stillroom_serve(stillroom_host, served, tmp_path, tiny_model_dir):
    root = data_root()
    endpoint = {"kind": "openai", "base_url": served + "/v1", "model": "tiny", "concurrency": 4, "max_retries": 1}
    spec = lion_spec(root, tiny_model_dir, iterations=2, instructions_per_iteration=6)
    spec["endpoints"] = {name: dict(endpoint) for name in ("teach", "ref", "gen")}
    spec["budget"] = {"train_examples": 18, "steps": 4, "batch_size": 4, "learning_rate": 1e-3}
    spec["methods"][0]["referee"].update(max_tokens=24, retries=1)
    spec["methods"][0]["teacher_sampling"] = {"max_tokens": 16}
    spec["evaluators"] = []
    run = run_spec(tmp_path, spec, stillroom_host)
    folder = run.dir.stage_path("methods/lion")
    dyn = json.loads((folder / "dynamics.json").read_text())
    rows = dyn["iterations"]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[0]["train_pool"] == 12 and rows[0]["cache_pool"] == 12
    # whatever the tiny models wrote, every Cache Pool pair was reviewed or counted as a failure
    assert rows[0]["hard"] + rows[0]["easy"] + rows[0]["referee_failures"] == 12
    assert rows[1]["train_pool"] == rows[0]["generated"] <= 6
    assert rows[1]["cache_pool"] == 12 + rows[0]["generated"]
    # every request the server answered is accounted for in the dynamics (cache misses per role)
    served_requests = get_json(served + "/stats")["requests"]
    counted = sum(r[f"calls_{role}"] for r in rows for role in ("teacher", "referee", "generator"))
    assert counted == served_requests > 0
    assert rows[0]["calls_teacher"] == 12 and rows[0]["protocol_teacher"] == 24


def test_heldout_and_warm_up_over_the_iterations(scripted, tmp_path, tiny_model_dir):
    spec = lion_spec(data_root(), tiny_model_dir, iterations=2, instructions_per_iteration=4,
                     heldout={"kind": "exact_match", "limit": 3, "max_tokens": 4, "rouge": False})
    spec["budget"].update(train_examples=12, warmup_ratio=0.5)
    run = run_spec(tmp_path, spec, scripted)
    folder = run.dir.stage_path("methods/lion")
    # the budget's warm-up spans all iterations' steps once: rising through iteration 1, at the peak on entering 2
    rates = {k: [json.loads(line)["learning_rate"] for line in (folder / f"iter{k}/train/log_history.jsonl").open()]
             for k in (1, 2)}
    peak = spec["budget"]["learning_rate"]
    assert rates[1][0] == 0 and rates[1][1] > 0 and rates[1] == sorted(rates[1])  # warming up from 0
    assert max(rates[1] + rates[2]) == pytest.approx(peak)
    assert rates[2][0] > 0.5 * peak and rates[2][-1] < rates[2][0]  # not restarted: decaying from the peak
    dyn = json.loads((folder / "dynamics.json").read_text())
    for k, row in zip((1, 2), dyn["iterations"]):
        stage = folder / f"iter{k}/heldout"
        stored = json.loads((stage / "result.json").read_text())["metrics"]
        assert row["heldout"] == stored[0]["value"] and stored[0]["n"] == 3  # the first metric by default
        samples = read_jsonl(stage / "samples.jsonl")
        assert len(samples) == 3 and all("correct" in s for s in samples)  # kept like any evaluation's samples
    # a metric the held-out evaluator does not report fails at once, naming the option
    spec["methods"][0]["heldout_metric"] = "bleu"
    spec["name"] = "lion-test-bad-metric"
    with pytest.raises(UserError, match=r"methods\[lion\]\.heldout_metric.*no metric 'bleu'"):
        run_spec(tmp_path, spec, scripted)
