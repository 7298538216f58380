"""Seeds, verdicts and the budget rule: hand-computed statistics, multi-seed runs, --jobs, and stage seeding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from stillroom.roles import UserError
from stillroom.leaderboard import (aggregate_seeds, hierarchical_bootstrap, holm, sign_flip_test, verdict,
                                    verdicts_against)
from stillroom.results import ResultsStore

HERE = Path(__file__).parent


# ---------------------------------------------------------------------------------------------------------
# A fixed example computed by hand. Eight test items, two seeds; 0/1 scores.
#   reference R: seed 0 = seed 1 = 1 1 1 0 0 0 0 0               mean 0.375
#   A: every item right at both seeds                            differences: 5 + 5 = 10 of +1, mean 10/16
#   B: every item wrong at both seeds                            differences: 3 + 3 = 6 of -1, mean -6/16
#   C: seed 0 = 1 1 1 1 0 0 0 0, seed 1 = R                      differences: one +1, mean 1/16
# Sign-flip test, exact: p = share of the 2^m sign patterns of the m non-zero differences whose |sum| reaches
# the observed one. All m differences share a sign, so only the two all-equal patterns do: p = 2 / 2^m.
#   A: 2 / 2^10 = 0.001953125    B: 2 / 2^6 = 0.03125    C: 2 / 2^1 = 1.0
# Holm over the three: sorted A, B, C get factors 3, 2, 1, each at least the previous one:
#   A: 3 * 0.001953125 = 0.005859375 -> better
#   B: max(0.005859375, 2 * 0.03125) = 0.0625 -> no difference detected (though raw p < 0.05)
#   C: max(0.0625, 1 * 1.0) = 1.0 -> no difference detected
R = [1, 1, 1, 0, 0, 0, 0, 0]
EXAMPLE = {"R": {"0": R, "1": R}, "A": {"0": [1] * 8, "1": [1] * 8}, "B": {"0": [0] * 8, "1": [0] * 8},
           "C": {"0": [1, 1, 1, 1, 0, 0, 0, 0], "1": R}}


def _scores(per_seed):
    return {seed: {f"q{i}": float(v) for i, v in enumerate(values)} for seed, values in per_seed.items()}


def test_hand_computed_verdicts_with_holm():
    got = verdicts_against("R", {name: _scores(s) for name, s in EXAMPLE.items()})
    assert set(got) == {"A", "B", "C"}
    assert [got[n]["p_value_raw"] for n in "ABC"] == [2 / 2**10, 2 / 2**6, 1.0]
    assert [got[n]["p_value"] for n in "ABC"] == [0.005859375, 0.0625, 1.0]
    assert [got[n]["diff_vs_reference"] for n in "ABC"] == [10 / 16, -6 / 16, 1 / 16]
    assert [got[n]["verdict"] for n in "ABC"] == ["better", "no difference detected", "no difference detected"]
    assert got["A"]["diff_ci_low"] <= 10 / 16 <= got["A"]["diff_ci_high"] and got["A"]["diff_ci_low"] > 0
    # the statistics on their own
    assert holm([0.03125, 1.0, 0.001953125]) == [0.0625, 1.0, 0.005859375]
    assert sign_flip_test([0.0, 0.0]) == 1.0
    # McNemar's exact test is the sign-flip test on 0/1 data: 3 items only A got right, 1 only B -> 0.625
    assert sign_flip_test([1, 1, 1, -1, 0, 0]) == pytest.approx(0.625)
    assert verdict(0.2, 0.01, higher_is_better=False) == "worse" and verdict(-0.2, 0.01) == "worse"


def test_seed_aggregate_and_hierarchical_interval():
    c = _scores(EXAMPLE["C"])
    got = aggregate_seeds({"0": 0.5, "1": 0.375}, c)
    assert got["value"] == 0.4375  # (4/8 + 3/8) / 2
    assert got["ci_low"] < 0.4375 < got["ci_high"]
    # every seed and item equal: the interval collapses; one seed: an item bootstrap of that seed
    assert hierarchical_bootstrap(np.ones((3, 5))) == (1.0, 1.0)
    low, high = hierarchical_bootstrap(np.array([[0.0] * 50 + [1.0] * 50]))
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62  # ~ 0.5 +- 1.96 * 0.05
    # seeds that disagree widen the interval beyond what the items alone give
    spread = np.array([[0.0] * 80 + [1.0] * 20, [0.0] * 20 + [1.0] * 80])
    one_seed = hierarchical_bootstrap(spread[:1])
    both = hierarchical_bootstrap(spread)
    assert both[1] - both[0] > 2 * (one_seed[1] - one_seed[0])
    # a reference evaluated once (the teacher) pairs with every seed of the entry
    versus_once = verdicts_against("R", {"R": {"0": _scores(EXAMPLE["R"])["0"]}, "A": _scores(EXAMPLE["A"])})
    assert versus_once["A"]["p_value_raw"] == 2 / 2**10


def test_fast_paths_equal_their_definitions():
    """The shared resamples and the exact sign-flip distribution give what the definitions above give."""
    from scipy import stats

    rng = np.random.default_rng(7)
    # hierarchical bootstrap: the seeds-then-items draws of default_rng(seed), means of the drawn cells
    x = rng.random((3, 50))
    draw = np.random.default_rng(0)
    seeds, items = draw.integers(0, 3, size=(2000, 3)), draw.integers(0, 50, size=(2000, 3, 50))
    expected = np.quantile(x[seeds[:, :, None], items].mean(axis=(1, 2)), [0.025, 0.975])
    assert hierarchical_bootstrap(x) == pytest.approx(tuple(expected), rel=1e-12)
    # 0/1 scores, many differences: the exact binomial (McNemar's exact test), not random assignments
    assert sign_flip_test([1.0] * 130 + [-1.0] * 170 + [0.0] * 9) == pytest.approx(
        stats.binomtest(130, 300, 0.5).pvalue, rel=1e-12)
    # two sizes (scores in steps of 0.5): the exact distribution, counted here sum by sum
    d = rng.choice([0.5, 1.0], 40) * rng.choice([1.0, -1.0], 40, p=[0.7, 0.3])
    counts = {0.0: 1}
    for value in d:
        step = {}
        for total, n in counts.items():
            for signed in (total + value, total - value):
                step[signed] = step.get(signed, 0) + n
        counts = step
    exact = sum(n for total, n in counts.items() if abs(total) >= abs(d.sum()) - 1e-9) / 2 ** 40
    assert sign_flip_test(d) == pytest.approx(exact, rel=1e-9)
    # scores of any size: random assignments from default_rng(seed), p = (1 + hits) / (1 + resamples)
    d = rng.normal(0.1, 1.0, 100)
    signs = np.random.default_rng(3).integers(0, 2, size=(2000, 100)) * 2 - 1
    hits = np.count_nonzero(np.abs(signs @ d) >= abs(d.sum()) * (1 - 1e-12))
    assert sign_flip_test(d, resamples=2000, seed=3) == (1 + hits) / 2001


def test_over_seeds_turns_typed_per_seed_records_into_leaderboard_records(tmp_path):
    """The hand-computed example through ``results.over_seeds``: per-seed ``Evaluation``s from samples files
    become one evaluation per model (mean over seeds, each seed's value, the Holm verdict against R), and each
    model's lineage the mean of what its seeds consumed."""
    from stillroom.results import Evaluation, Lineage, SubjectResults, over_seeds
    from stillroom.roles import MetricValue

    outcomes = []
    for label, per_seed in EXAMPLE.items():
        for seed, values in per_seed.items():
            samples = tmp_path / f"{label}-{seed}.jsonl"
            samples.write_text("".join(json.dumps({"id": f"q{i}", "correct": v}) + "\n" for i, v in enumerate(values)))
            mean = sum(values) / len(values)
            evaluation = Evaluation.of(label, "em", "exact_match", [MetricValue(metric="accuracy", value=mean, n=8)],
                                       samples_path=str(samples), seed=int(seed))
            lineage = Lineage("method", method="sft", seeds=(int(seed),), budget={"optimizer_steps": 10 + int(seed)},
                              extra={"seed": seed})
            outcomes.append(SubjectResults(label, lineage, (evaluation,)))
    evaluations, lineages = over_seeds(outcomes, "R", "demo", resamples=200)
    by_model = {e.subject: e.metrics[0] for e in evaluations}
    assert [e.subject for e in evaluations] == ["R", "A", "B", "C"] and {e.seed for e in evaluations} == {None}
    assert by_model["C"].value == pytest.approx((4 / 8 + 3 / 8) / 2) and by_model["C"].per_seed == {"0": 0.5,
                                                                                                      "1": 0.375}
    assert by_model["A"].stderr is None and by_model["A"].seeds == [0, 1] and by_model["A"].reference == "demo/R"
    assert (by_model["A"].verdict, by_model["A"].p_value) == ("better", pytest.approx(0.005859375))
    assert by_model["B"].p_value == pytest.approx(0.0625) and by_model["R"].verdict is None
    assert by_model["A"].seed_samples == {"0": str(tmp_path / "A-0.jsonl"), "1": str(tmp_path / "A-1.jsonl")}
    assert lineages["A"].seeds == (0, 1) and lineages["A"].budget["optimizer_steps"] == 10.5
    assert lineages["A"].budget["cost"] is None  # no seed measured it: unknown, not free
    assert lineages["A"].extra["by_seed"]["1"] == {"info": {"seed": "1"}, "path": ""}


# ---------------------------------------------------------------------------------------------------------
# Runs with several seeds, on the toy plugin (tests/core/toy_components.py).

SEEDED_SPEC = """
name = "seeded"
seeds = [0, 1, 2]

[student]
kind = "table"

[data]
kind = "words"
train_size = 12
test_size = 2

[budget]
train_examples = 10

[evaluate]
teacher = false

[[methods]]
kind = "gold"

[[methods]]
kind = "coin"

[[evaluators]]
kind = "match"
split = "train"
"""


@pytest.fixture
def seeded_spec(tmp_path):
    path = tmp_path / "seeded.toml"
    path.write_text(SEEDED_SPEC)
    return path


def _board(run_id):
    with ResultsStore.default() as store:
        return {r["model"]: r for r in store.rows(run_id=run_id)}


def _coin_per_seed_by_hand(seeds, train_examples=10, train_size=12):
    """What CoinMethod learns at each seed, recomputed here: the budget's records in the entry's order, each kept
    when the stage's first draws say so; it then answers exactly the kept prompts of the train split."""
    import random

    from stillroom.training import derive_seed

    out = {}
    for seed in seeds:
        records = list(range(train_examples))
        random.Random(derive_seed(seed, "train_records")).shuffle(records)
        draw = random.Random(derive_seed(seed, "train"))
        out[str(seed)] = sum(draw.random() < 0.5 for _ in records) / train_size
    return out


def test_seeds_train_each_entry_once_per_seed_and_aggregate(toy_host, seeded_spec):
    from stillroom.runs import execute

    run = execute(seeded_spec, host=toy_host)
    stages = run.dir.root / "stages"
    for seed in (0, 1, 2):
        assert (stages / f"methods/coin/seed{seed}/train/.done").exists()
        assert (stages / f"eval/coin/seed{seed}/match/samples.jsonl").exists()
    assert (stages / "eval/base/match/.done").exists() and not (stages / "eval/base/seed0").exists()
    board = _board(run.id)
    coin, gold, base = board["seeded/coin"], board["seeded/gold"], board["seeded/base"]
    assert coin["seeds"] == [0, 1, 2] and base["seeds"] == []
    expected = _coin_per_seed_by_hand([0, 1, 2])
    assert coin["per_seed"] == pytest.approx(expected)
    assert coin["value"] == pytest.approx(sum(expected.values()) / 3)
    assert coin["ci_low"] <= coin["value"] <= coin["ci_high"]
    # gold learns the 10 budget records whatever the seed: 10 of 12 train prompts
    assert gold["per_seed"] == {"0": 10 / 12, "1": 10 / 12, "2": 10 / 12}
    # gold is the reference (the first method entry: the toy methods declare no baseline)
    assert {r["reference"] for r in board.values()} == {"seeded/gold"}
    assert gold["verdict"] is None and gold["p_value"] is None
    assert base["verdict"] == "worse" and base["diff_vs_reference"] == pytest.approx(-10 / 12)
    assert coin["diff_vs_reference"] == pytest.approx(coin["value"] - 10 / 12)
    assert coin["verdict"] == "worse"  # coin never knows more than gold, and misses some at every seed
    # budget columns: summed over the entry's stages, averaged over its seeds
    assert coin["optimizer_steps"] == 1 and gold["optimizer_steps"] is None
    assert coin["train_sequences"] == pytest.approx(sum(expected.values()) * 12 / 3)


def test_pairwise_comparisons_agree_with_the_verdicts(toy_host, seeded_spec):
    """The verdict matrix's pairs (leaderboard.pairwise) agree with the reference comparisons of the same run."""
    from stillroom.runs import execute
    from stillroom.leaderboard import pairwise

    run = execute(seeded_spec, host=toy_host)
    with ResultsStore.default() as store:
        rows = store.rows(run_id=run.id)
    pairs = {(p["a"], p["b"]): p for p in pairwise(rows)}
    assert len(pairs) == 3 and all(p["key"] == "match/acc" for p in pairs.values())
    coin = next(r for r in rows if r["model"] == "seeded/coin")
    found = pairs.get(("seeded/coin", "seeded/gold")) or pairs[("seeded/gold", "seeded/coin")]
    sign = 1 if found["a"] == "seeded/coin" else -1
    assert sign * found["difference"] == pytest.approx(coin["diff_vs_reference"])
    assert found["p_value"] == coin["p_value_raw"]


def test_seeds_option_replaces_the_spec_seeds_and_a_bad_list_is_one_line(toy_host, seeded_spec):
    from stillroom.runs import execute, parse_seeds

    run = execute(seeded_spec, host=toy_host, seeds=[5])
    coin = _board(run.id)["seeded/coin"]
    assert coin["seeds"] == [5] and coin["per_seed"] == pytest.approx(_coin_per_seed_by_hand([5]))
    assert (run.dir.root / "stages/methods/coin/train/.done").exists()  # one seed: no seed level in paths
    for bad, message in (("1,x", "comma-separated integers"), ("1,1", "each seed once"), (",", "at least one")):
        with pytest.raises(UserError, match=message) as caught:
            parse_seeds(bad)
        assert caught.value.location == "--seeds"


def test_an_entry_alone_equals_the_entry_after_others(toy_host, seeded_spec, tmp_path):
    """The coin entry's result depends on its seed only, not on the three entries that ran before it."""
    from stillroom.runs import execute

    alone = tmp_path / "alone.toml"
    alone.write_text(SEEDED_SPEC.replace('[[methods]]\nkind = "gold"\n', "").replace('name = "seeded"', 'name = "alone"'))
    crowded = tmp_path / "crowded.toml"
    crowded.write_text(SEEDED_SPEC.replace('[[methods]]\nkind = "coin"', '[[methods]]\nkind = "coin"\nlabel = "first"\n\n'
                                           '[[methods]]\nkind = "gold"\nlabel = "again"\n\n[[methods]]\nkind = "coin"')
                       .replace('name = "seeded"', 'name = "crowded"'))
    first = _board(execute(alone, host=toy_host).id)["alone/coin"]
    board = _board(execute(crowded, host=toy_host).id)
    assert first["per_seed"] == board["crowded/coin"]["per_seed"]
    # the stage seed comes from the entry's seed and stage name, not its label: "first" learns the same
    assert board["crowded/first"]["per_seed"] == first["per_seed"]


def test_jobs_2_gives_the_same_leaderboard_as_jobs_1(toy_host, seeded_spec, monkeypatch):
    """Entries in two child processes (submitit's local executor) give the rows one process gives."""
    from stillroom.runs import LaunchOptions, execute
    from toy_components import make_toy_host

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    one = _board(execute(seeded_spec, host=toy_host).id)
    run = execute(seeded_spec, host=toy_host, launch=LaunchOptions(jobs=2, host_factory=make_toy_host))
    two = _board(run.id)
    fields = ("value", "ci_low", "ci_high", "per_seed", "seeds", "diff_vs_reference", "diff_ci_low", "diff_ci_high",
              "p_value", "verdict", "optimizer_steps", "train_sequences")
    assert {m: {f: r[f] for f in fields} for m, r in two.items()} == {m: {f: r[f] for f in fields} for m, r in one.items()}
    events = [json.loads(line) for line in (run.dir.root / "events.jsonl").read_text().splitlines()]
    submitted = [e for e in events if e["event"] == "entry_submitted"]
    # 2 methods x 3 seeds offered to 2 lanes (child processes) that claim them as they free up: every entry is
    # run exactly once, by one of the two lanes
    finished = [(e["entry"], e["seed"], e["job"]) for e in events if e["event"] == "entry_finished"]
    lanes = {e["job"] for e in submitted}
    assert len(submitted) == 12 and len(lanes) == 2
    assert sorted((entry, seed) for entry, seed, _ in finished) == sorted(
        (entry, seed) for entry in ("coin", "gold") for seed in (0, 1, 2))
    assert {job for _, _, job in finished} <= lanes


def test_jobs_and_launcher_options_are_checked(monkeypatch):
    from stillroom.runs import default_jobs, parse_jobs

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: cores / threads per job
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parse_jobs("3") == 3 and parse_jobs("auto") == default_jobs() == (os.cpu_count() or 1)
    assert default_jobs(gpus=4) == 4
    for bad in ("0", "many"):
        with pytest.raises(UserError) as caught:
            parse_jobs(bad)
        assert caught.value.location == "--jobs"


def test_run_command_checks_seeds_jobs_and_launcher(toy_host, seeded_spec, tmp_path, capsys):
    """Bad --seeds/--jobs/--launcher values are one line each (exit 2) before anything runs; Slurm options map
    onto submitit's, and a machine without Slurm says so."""
    from stillroom.cli import main
    from stillroom.runs import LaunchOptions, run_in_processes, slurm_parameters

    cases = [(["--seeds", "0,a"], "--seeds: expected comma-separated integers"),
             (["--jobs", "0"], "--jobs: must be at least 1"),
             (["--launcher", "pbs"], "--launcher: unknown launcher 'pbs'"),
             (["--partition", "gpu"], "--partition: a partition is a Slurm option"),
             (["--gpus", "1"], "--gpus: GPUs per job are a Slurm option")]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exited:
            main(["run", str(seeded_spec), *extra])
        assert exited.value.code == 2, extra
        assert capsys.readouterr().err.splitlines()[0].startswith(message), extra
    assert not (seeded_spec.parent / "runs").exists()  # nothing ran
    options = LaunchOptions(jobs=4, launcher="slurm", partition="gpu", time_minutes=30, threads_per_job=2, gpus=2)
    assert slurm_parameters(options) == {"timeout_min": 30, "cpus_per_task": 2, "gpus_per_node": 2,
                                         "slurm_array_parallelism": 4, "slurm_partition": "gpu"}
    if not __import__("shutil").which("srun"):
        with pytest.raises(UserError, match="no Slurm on this machine"):
            run_in_processes([], options, tmp_path / "jobs")


def test_reference_option_is_checked_and_used(toy_host, tmp_path):
    from stillroom.runs import execute
    from stillroom.specs import SpecError, read_spec_file, validate_spec

    path = tmp_path / "ref.toml"
    path.write_text(SEEDED_SPEC.replace("seeds = [0, 1, 2]", "seeds = [0, 1]\nreference = \"coin\""))
    board = _board(execute(path, host=toy_host).id)
    assert {r["reference"] for r in board.values()} == {"seeded/coin"}
    assert board["seeded/gold"]["verdict"] == "better" and board["seeded/coin"]["verdict"] is None
    for reference, message in (("cion", "reference: no entry named 'cion' (did you mean 'coin'?)"),
                               ("teacher", "reference: 'teacher' is compared with only when the spec has a teacher")):
        data = {**read_spec_file(path), "reference": reference}
        with pytest.raises(SpecError) as caught:
            validate_spec(data, toy_host)
        assert caught.value.lines[0].startswith(message), caught.value.lines


def test_an_entry_process_stops_when_its_run_is_killed():
    """kill -9 of `stillroom run` must not leave entry processes training in the run folder: each watches it."""
    import signal
    import subprocess
    import sys
    import time

    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    entry = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom stillroom.runs import _exit_with_parent\n"
                              "_exit_with_parent(int(sys.argv[1]), poll=0.1)\nprint('watching', flush=True)\n"
                              "time.sleep(120)", str(run.pid)], stdout=subprocess.PIPE, text=True)
    try:
        assert entry.stdout.readline().strip() == "watching"
        time.sleep(0.3)
        assert entry.poll() is None  # its run is alive: it keeps working
        os.kill(run.pid, signal.SIGKILL)  # not reaped yet: a zombie counts as gone too
        assert entry.wait(timeout=10) == 1
    finally:
        for process in (run, entry):
            if process.poll() is None:
                process.kill()
        run.wait()
