"""Lion's offline instruction writer (arithmetic_variations) takes its operand and operator ranges from the
data's difficulty: over many generated problems, for several difficulties and over generations of problems
written from written problems, no variation ever leaves the data's ranges."""

import pytest

from stillroom import build
from stillroom.plugins.lion.arithmetic import parse_problem

DIFFICULTIES = [
    {"operations": 2, "max_operand": 20},  # the quickstart's task
    {"operations": 3, "operators": ["+", "-", "*"], "min_operand": 5, "max_operand": 60, "max_multiplier": 4},
    {"operations": 2, "operators": ["-"], "max_operand": 9, "allow_negative": True},
    {"operations": 2, "max_operand": 20, "word_problems": 0.5},
]


def inside(problem, task):
    """Why ``problem`` leaves ``task``'s ranges, or None."""
    low, high = task.get("min_operand", 0), task["max_operand"]
    operators = task.get("operators", ["+", "-"])
    if not low <= problem.first <= high:
        return f"first operand {problem.first} outside {low}-{high}"
    if len(problem.steps) != task["operations"]:
        return f"{len(problem.steps)} operations, the task has {task['operations']}"
    for op, n in problem.steps:
        if op not in operators:
            return f"operator {op} not in {operators}"
        top = task.get("max_multiplier", 9) if op == "*" else high
        if not (min(low, top) if op == "*" else low) <= n <= top:
            return f"operand {n} of {op} outside the task's range"
    if not task.get("allow_negative") and min(problem.values()) < 0:
        return "a negative result"
    return None


@pytest.mark.parametrize("task", DIFFICULTIES, ids=["quickstart", "three-ops", "negatives", "stories"])
def test_variations_never_leave_the_data_ranges(stillroom_host, task):
    data = build("generator", "arithmetic", train_size=60, test_size=0, seed=1, difficulty=task).build_dataset()
    writer = build("generator", "arithmetic_variations")
    seeds, produced = data["train"], 0
    for generation in range(3):  # later generations grow from written problems, as Lion's pool does
        asks = [{"seed": seeds[i % len(seeds)], "mode": mode, "key": f"g{generation}-{mode}-{i}"}
                for i in range(150) for mode in ("hard", "easy")]
        written = [c for c in writer.propose(asks) if c["prompt"]]
        assert len(written) >= 0.9 * len(asks)
        for candidate in written:
            problem = parse_problem(candidate["prompt"])
            assert problem is not None and str(problem.answer) == candidate["answer"]
            assert inside(problem, task) is None, (inside(problem, task), candidate["prompt"])
        produced += len(written)
        seeds = written
    assert produced >= 800


def test_without_a_stated_difficulty_the_seeds_ranges_bound_the_variations(stillroom_host):
    """Foreign records (no ``difficulty``): the ranges are those of the seeds asked about."""
    data = build("generator", "arithmetic", train_size=80, test_size=0, seed=2,
                 difficulty={"operations": 2, "max_operand": 20}).build_dataset()
    seeds = [{k: v for k, v in row.items() if k != "difficulty"} for row in data["train"]]
    writer = build("generator", "arithmetic_variations")
    asks = [{"seed": seed, "mode": mode, "key": f"{mode}{i}"} for i, seed in enumerate(seeds) for mode in ("hard", "easy")]
    seen = [parse_problem(s["prompt"]) for s in seeds]
    high = max([p.first for p in seen] + [n for p in seen for _, n in p.steps])
    for candidate in writer.propose(asks):
        problem = parse_problem(candidate["prompt"])
        assert problem is not None and max([problem.first] + [n for _, n in problem.steps]) <= high <= 20
        assert {op for op, _ in problem.steps} <= {"+", "-"}
