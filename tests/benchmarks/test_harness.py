"""The lm_eval evaluator: tasks from an include path run on a tiny in-memory model, metric rows and samples,
standard errors filled in when lm-eval computes none, the option-letter filter, and the errors a user can fix."""

from __future__ import annotations

import json
import math

import pytest

from stillroom import Subject, UserError
from stillroom.benchmarks.harness.answer_letters import INVALID, choice_letter, option_letters
from stillroom.benchmarks.harness.evaluator import LmEvalEvaluator

QUESTIONS = [("Is 2 + 2 four?", ["yes", "no"], 0), ("Which is a colour?", ["red", "seven", "dog"], 0),
             ("Pick the number", ["cat", "12", "sky"], 1), ("Sky colour?", ["green", "blue"], 1),
             ("3 + 4 =", ["7", "8", "9", "10"], 0), ("Opposite of true", ["true", "false"], 1),
             ("A prime", ["4", "6", "5"], 2), ("Sea is", ["dry", "wet"], 1)]


# --------------------------------------------------------------------------------------------------------
# The option letter of a free-text answer (no lm-eval needed)


@pytest.mark.parametrize("text, letters, expected", [
    ("(B)", "ABCD", "B"),
    ("(B) 12/25/1937", "ABCDEF", "B"),
    ("the answer is B", "ABCD", "B"),
    ("The answer is (C).", "ABCD", "C"),
    ("I think A.", "ABCD", "A"),
    ("I'm sure it is D", "ABCD", "D"),
    ("Answer: B", "ABCD", "B"),
    ("b", "ABCD", "B"),
    ("(c) blue", "ABCD", "C"),
    ("a cat sat on the mat", "ABCD", None),
    ("none of them", "ABCD", None),
    ("None", "ABCD", None),
    ("", "ABCD", None),
    (None, "ABCD", None),
    ("E", "ABCD", None),
    ("It is E, no wait, B", "ABCD", "B"),
    ("I", option_letters(11), "I"),
    ("(I)", option_letters(11), "I"),
    (" (A)George, Helen", "ABCDE", "A"),
])
def test_choice_letter(text, letters, expected):
    assert choice_letter(text, letters) == expected


def test_option_letters():
    assert option_letters(2) == "AB"
    assert option_letters(None) == option_letters(0) == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --------------------------------------------------------------------------------------------------------
# A toy include path: two multiple-choice tasks in a group, one generative task using the letter filter


def _write_tasks(folder):
    data = folder / "data"
    data.mkdir()
    for name, rows in (("a", QUESTIONS), ("b", QUESTIONS[:5])):
        with (data / f"{name}.jsonl").open("w") as handle:
            for question, choices, answer in rows:
                handle.write(json.dumps({"question": question, "choices": choices, "answer": answer,
                                         "letter": "ABCD"[answer]}) + "\n")
    tasks = folder / "tasks"
    tasks.mkdir()
    for name in ("a", "b"):
        (tasks / f"toy_mc_{name}.yaml").write_text(f"""task: toy_mc_{name}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    test: {data / f'{name}.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    (tasks / "toy_group.yaml").write_text("""group: toy_group
task: [toy_mc_a, toy_mc_b]
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
""")
    (tasks / "toy_gen.yaml").write_text(f"""task: toy_gen
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    test: {data / 'a.jsonl'}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}} Options: {{{{choices}}}}\\nA:"
doc_to_target: "{{{{letter}}}}"
generation_kwargs:
  until: ["\\n"]
  do_sample: false
  max_gen_toks: 4
filter_list:
  - name: first-letter
    filter:
      - function: stillroom_choice_letter
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    return tasks


@pytest.fixture(scope="module")
def toy_tasks(tmp_path_factory):
    return _write_tasks(tmp_path_factory.mktemp("toy-tasks"))


def _evaluator(**options):
    return LmEvalEvaluator(LmEvalEvaluator.Config(**options))


@pytest.fixture(scope="module")
def results(toy_tasks, tiny_subject):
    """The same evaluation with lm-eval's own standard errors (bootstrap_iters > 0) and with ours (0)."""
    ours = _evaluator(tasks=["toy_group"], include_path=[str(toy_tasks)], bootstrap_iters=0).evaluate(tiny_subject)
    theirs = _evaluator(tasks="toy_group", include_path=str(toy_tasks), bootstrap_iters=10).evaluate(tiny_subject)
    return ours, theirs


def test_metric_rows_names_counts_and_samples(results):
    ours, _ = results
    rows = {m.metric: m for m in ours.metrics}
    assert set(rows) == {"toy_group/acc,none", "toy_mc_a/acc,none", "toy_mc_b/acc,none"}
    assert [rows[k].n for k in ("toy_mc_a/acc,none", "toy_mc_b/acc,none", "toy_group/acc,none")] == [8, 5, 13]
    samples = [s for s in ours.samples if s["task"] == "toy_mc_a"]
    assert len(samples) == 8 and all(len(s["loglikelihoods"]) == len(QUESTIONS[int(s["doc_id"])][1])
                                     for s in samples)
    # acc per sample is argmax of the choice log-likelihoods vs the gold index, and the mean is the row
    for sample in samples:
        best = max(range(len(sample["loglikelihoods"])), key=lambda i: sample["loglikelihoods"][i])
        assert sample["acc"] == float(best == QUESTIONS[int(sample["doc_id"])][2])
    assert rows["toy_mc_a/acc,none"].value == pytest.approx(sum(s["acc"] for s in samples) / 8)
    group = (rows["toy_mc_a/acc,none"].value * 8 + rows["toy_mc_b/acc,none"].value * 5) / 13
    assert rows["toy_group/acc,none"].value == pytest.approx(group)
    json.dumps(ours.samples)  # the run directory stores them as JSON lines
    assert ours.details["stderr"].startswith("closed form")


def test_filled_in_stderr_equals_lm_eval_closed_form(results):
    ours, theirs = results
    mine = {m.metric: m for m in ours.metrics}
    reference = {m.metric: m for m in theirs.metrics}
    assert mine.keys() == reference.keys()
    for name, row in reference.items():
        assert mine[name].value == row.value
        assert row.stderr is not None and mine[name].stderr == pytest.approx(row.stderr, rel=1e-12), name
    values = [s["acc"] for s in ours.samples if s["task"] == "toy_mc_b"]
    mean = sum(values) / len(values)
    expected = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) / math.sqrt(len(values))
    assert mine["toy_mc_b/acc,none"].stderr == pytest.approx(expected)


def test_generative_task_with_letter_filter(toy_tasks, tiny_subject):
    result = _evaluator(tasks=["toy_gen"], include_path=[str(toy_tasks)], limit=4).evaluate(tiny_subject)
    (row,) = result.metrics
    assert row.metric == "toy_gen/exact_match,first-letter" and row.n == 4
    assert len(result.samples) == 4
    for sample in result.samples:
        question = QUESTIONS[int(sample["doc_id"])]
        expected = choice_letter(sample["response"], option_letters(len(question[1]))) or INVALID
        assert sample["prediction"] == expected
        assert sample["exact_match"] == float(expected == "ABCD"[question[2]])
        assert sample["prompt"].startswith(f"Q: {question[0]}")


def test_include_path_alone_is_enough(toy_tasks):
    manager, names = _evaluator(tasks=["toy_mc_*"], include_path=[str(toy_tasks)]).task_manager()
    assert names == ["toy_mc_a", "toy_mc_b"]
    assert "mmlu" not in manager.all_tasks  # lm-eval's own collection was not scanned


def test_unknown_task_is_a_user_error(toy_tasks):
    # include_defaults=False keeps this fast; with it the same error follows a scan of lm-eval's own tasks
    with pytest.raises(UserError, match="unknown lm-eval task or group 'toy_mc_c'.*did you mean"):
        _evaluator(tasks=["toy_mc_c"], include_path=[str(toy_tasks)], include_defaults=False).task_manager()


def test_api_model_refuses_loglikelihood_tasks(toy_tasks, api_subject):
    with pytest.raises(UserError, match="log-likelihood"):
        _evaluator(tasks=["toy_group"], include_path=[str(toy_tasks)]).evaluate(api_subject)


def test_api_model_arguments(api_subject):
    from stillroom.benchmarks.harness.subject_model import harness_model

    model = harness_model(api_subject, batch_size=8, device="cpu", max_length=None, location="here")
    assert model.is_api and model.model == "local-chat-completions"
    assert model.model_args["base_url"] == "http://127.0.0.1:9/v1/chat/completions"
    assert model.model_args["model"] == "served"


def test_subject_without_a_model_is_a_user_error(toy_tasks):
    with pytest.raises(UserError, match="cannot evaluate 'nothing'"):
        _evaluator(tasks=["toy_group"], include_path=[str(toy_tasks)]).evaluate(Subject("nothing", None))


def test_config_errors(stillroom_host, tmp_path):
    from stillroom import build

    with pytest.raises(UserError, match="fewshot_as_multiturn"):
        build("evaluator", "lm_eval", tasks=["x"], fewshot_as_multiturn=True)
    with pytest.raises(UserError, match="include_path folder"):
        build("evaluator", "lm_eval", tasks=["x"], include_path=[str(tmp_path / "missing")])
    evaluator = build("evaluator", "lm_eval", tasks="mmlu", limit=5, num_fewshot=0, variant="lm_eval")
    assert evaluator.config.tasks == ["mmlu"]


def test_task_folder_is_written_once_and_reports_under_benchmark_names(stillroom_env, tmp_path):
    from stillroom import EvalResult, MetricValue
    from stillroom.benchmarks.harness.bbh import BbhEvaluator
    from stillroom.benchmarks.harness.mmlu import MmluEvaluator
    from stillroom.benchmarks.harness.task_folders import task_folder

    source = tmp_path / "source.json"
    source.write_text("{}")
    calls = []

    def fill(out):
        calls.append(out)
        out.task("toy_t", {"task": "toy_t", **out.dataset({"test": out.data("t.jsonl", [{"x": 1}, {"x": 2}])})})
        return {"t": 2}

    def make():
        return task_folder("toy", {"format": 1}, files=[source], missing="gone", group="toy_g",
                           tasks={"toy_t": "t"}, fill=fill, prefix="v-")

    folder = make()
    assert make() == folder and len(calls) == 1  # the finished folder is reused
    assert folder.counts == {"t": 2} and folder.include_dir.parent.name.startswith("v-")
    assert f"test: {folder.include_dir.parent / 'data' / 't.jsonl'}" in (folder.include_dir / "toy_t.yaml").read_text()
    assert not list(folder.include_dir.parent.parent.glob("*.tmp-*"))
    # a task benchmark runs the folder's group with its own run options, on the lm_eval evaluator
    options = BbhEvaluator(BbhEvaluator.Config(limit=3, max_length=64, max_gen_toks=5)).runner(folder).config
    assert options.tasks == ["toy_g"] and options.include_path == [str(folder.include_dir)]
    assert options.limit == 3 and options.max_length == 64 and options.gen_kwargs == {"max_gen_toks": 5}
    assert not options.include_defaults and options.batch_size == 8 and options.log_samples
    options = MmluEvaluator(MmluEvaluator.Config()).runner(folder).config
    assert options.num_fewshot == 5 and options.gen_kwargs is None
    rows = [MetricValue(metric=m, value=0.5, n=2) for m in ("toy_g/acc,none", "toy_t/acc,none", "other/acc,none")]
    result = folder.report(EvalResult(metrics=rows, samples=[{"task": "toy_t"}], details={"a": 1}), "toy",
                           metric={"acc,none": "acc"}, details={"b": 2})
    assert [m.metric for m in result.metrics] == ["toy/acc", "toy/t/acc"]
    assert result.samples == [{"task": "t"}] and result.details == {"a": 1, "benchmark": "toy", "b": 2}
    with pytest.raises(UserError, match="gone"):
        task_folder("toy", {}, files=[tmp_path / "nope"], missing="gone", group="g", tasks={}, fill=fill)
