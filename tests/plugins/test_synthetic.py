"""The synthetic plugin: the arithmetic generator, the character tokenizer, and the cached quickstart teacher
and student (tiny training budgets; the real teacher's accuracy is measured by `stillroom quickstart`)."""

import json

import pytest

import stillroom
from stillroom import UserError
from stillroom.plugins.synthetic import models as quickstart_models
from stillroom.plugins.synthetic.arithmetic import Problem, draw_split, split_of
from stillroom.plugins.synthetic.char_tokenizer import char_tokenizer
from stillroom.plugins.synthetic.config import ArithmeticTask, TinyModelShape

TINY_TEACHER = {"shape": {"layers": 1, "hidden": 32, "heads": 2},
                "training": {"steps": 30, "batch_size": 16, "warmup_steps": 5, "eval_size": 20}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_data(**options):
    return stillroom.build("generator", "arithmetic", **options).build_dataset()


def test_same_seed_same_data_other_seed_other_data(stillroom_host):
    first = build_data(train_size=200, test_size=50, seed=3)
    assert first == build_data(train_size=200, test_size=50, seed=3)
    other = build_data(train_size=200, test_size=50, seed=4)
    assert [r["prompt"] for r in other["train"]] != [r["prompt"] for r in first["train"]]


def test_default_seed_is_the_runs_seed(stillroom_host):
    from stillroom import Context

    a = stillroom.build("generator", "arithmetic", train_size=20, test_size=5, context=Context(seed=7))
    b = stillroom.build("generator", "arithmetic", train_size=20, test_size=5, seed=7)
    assert a.build_dataset() == b.build_dataset()


def test_splits_never_overlap_for_any_seed(stillroom_host):
    tests = {r["expression"] for seed in (0, 1, 2) for r in build_data(train_size=0, test_size=300, seed=seed)["test"]}
    trains = {r["expression"] for seed in (0, 1, 2) for r in build_data(train_size=2000, test_size=0, seed=seed)["train"]}
    assert len(tests) > 300 and len(trains) > 2000  # different seeds draw different problems...
    assert not tests & trains  # ...but a test problem is never a training problem
    one = build_data(train_size=500, test_size=100, seed=0)
    assert len({r["expression"] for r in one["train"]}) == 500  # no duplicates within a split
    assert len({r["id"] for r in one["train"] + one["test"]}) == 600


def test_records_are_correct_and_well_formed(stillroom_host):
    data = build_data(train_size=100, test_size=30, seed=1,
                      difficulty={"operations": 3, "operators": ["+", "-", "*"], "word_problems": 0.5})
    stories = 0
    for row in data["train"] + data["test"]:
        assert set(row) >= {"id", "prompt", "target", "answer", "rationale"}
        assert eval(row["expression"]) == int(row["answer"])  # parentheses make left-to-right the usual order
        assert row["target"] == f"{row['rationale']} The answer is {row['answer']}."
        assert row["rationale"].count("=") == 3
        assert int(row["answer"]) >= 0  # negatives are redrawn by default
        stories += not row["prompt"].startswith("What is")
    assert 20 < stories < 110


def test_rationale_and_parentheses():
    problem = Problem(23, (("+", 45), ("-", 12)))
    assert problem.prompt() == "What is 23+45-12?"
    assert problem.target() == "23+45=68. 68-12=56. The answer is 56."
    assert Problem(2, (("+", 3), ("*", 4))).expression() == "(2+3)*4"
    assert Problem(2, (("*", 3), ("+", 4))).expression() == "2*3+4"
    assert split_of(problem) == split_of(Problem(23, (("+", 45), ("-", 12))))


def test_difficulty_is_configurable(stillroom_host):
    easy = build_data(train_size=50, test_size=0, difficulty={"operations": 1, "max_operand": 9})
    assert all(r["rationale"].count("=") == 1 and int(r["answer"]) <= 18 for r in easy["train"])
    with pytest.raises(UserError, match="distinct test problems"):
        build_data(train_size=10, test_size=100, difficulty={"operations": 1, "max_operand": 9})


def test_bad_difficulty_is_a_spec_error(stillroom_host):
    with pytest.raises(UserError, match="min_operand"):
        stillroom.build("generator", "arithmetic", difficulty={"min_operand": 50, "max_operand": 10})


def test_char_tokenizer_round_trip_and_chat_template(tmp_path):
    tokenizer = char_tokenizer()
    text = "23+45=68. 68-12=56. The answer is 56.\nAda has 3 coins!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is 1+2?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat == "<|user|>What is 1+2?<|end|><|assistant|>"
    assert len(tokenizer(chat, add_special_tokens=False)["input_ids"]) == len("What is 1+2?") + 3
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids and again.padding_side == "left"


def test_default_student_is_at_least_four_times_smaller_than_the_teacher():
    from stillroom.plugins.synthetic.config import QuickstartStudentConfig, QuickstartTeacherConfig
    from stillroom.plugins.synthetic.training import build_llama, parameter_count

    tokenizer = char_tokenizer()
    teacher = parameter_count(build_llama(tokenizer, QuickstartTeacherConfig().shape, seed=0))
    student = parameter_count(build_llama(tokenizer, QuickstartStudentConfig().shape, seed=0))
    assert teacher >= 4 * student


def test_teacher_is_trained_once_then_loaded_from_the_cache(stillroom_host, monkeypatch):
    from stillroom import GenerationRequest

    teacher = stillroom.build("teacher", "quickstart", **TINY_TEACHER)
    assert teacher.path.parent == stillroom.paths.cache_dir() / "models"
    recorded = json.loads((teacher.path / "training.json").read_text())
    assert recorded["steps"] == 30 and 0 <= recorded["held_out_exact_match"] <= 1
    assert teacher.model is not None and teacher.tokenizer is not None
    answer = teacher.generate([GenerationRequest(messages=[{"role": "user", "content": "What is 1+2?"}],
                                                 max_tokens=8)])
    assert isinstance(answer[0][0].text, str)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached teacher was trained again")

    monkeypatch.setattr(quickstart_models, "train_teacher", no_training)
    again = stillroom.build("teacher", "quickstart", **TINY_TEACHER)
    assert again.path == teacher.path
    assert again.endpoint.identity() == teacher.endpoint.identity()
    other = dict(TINY_TEACHER, training={**TINY_TEACHER["training"], "seed": 1})
    with pytest.raises(AssertionError, match="trained again"):  # another config is another model
        stillroom.build("teacher", "quickstart", **other)


def test_student_delegates_to_the_hf_student(stillroom_host):
    student = stillroom.build("student", "quickstart", shape={"layers": 1, "hidden": 16, "heads": 2})
    assert student.path == str(student.initial_path)
    fresh = student.fresh()
    import torch

    for a, b in zip(student.model.parameters(), fresh.model.parameters()):
        assert torch.equal(a, b)
    records = build_data(train_size=16, test_size=0)["train"]
    before = [p.detach().clone() for p in fresh.model.parameters()]
    result = fresh.fit(records, steps=3, batch_size=8, learning_rate=1e-2, seed=0)
    assert result["steps"] == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, fresh.model.parameters()))
    # the base student is untouched, and its weights are what the cache holds
    rebuilt = stillroom.build("student", "quickstart", shape={"layers": 1, "hidden": 16, "heads": 2})
    for a, b in zip(student.model.parameters(), rebuilt.model.parameters()):
        assert torch.equal(a, b)


def test_shape_validation():
    with pytest.raises(ValueError, match="multiple of heads"):
        TinyModelShape(hidden=30, heads=4)
    with pytest.raises(ValueError):
        ArithmeticTask(operators=[])


def test_draw_split_is_deterministic_per_split():
    task = ArithmeticTask()
    test = draw_split(task, "test", 20, 5)
    assert test == draw_split(task, "test", 20, 5)
    assert test[:10] == draw_split(task, "test", 10, 5)  # a smaller size is a prefix: limits nest


TINY_PRETRAINED = {"shape": {"layers": 1, "hidden": 16, "heads": 2},
                   "pretraining": {"steps": 20, "batch_size": 16, "warmup_steps": 2, "eval_size": 10}}


def test_pretrained_base_student_is_built_once_then_reused(stillroom_host):
    """The quickstart's base student is pretrained on generic text (single-operation facts, never a task
    problem), cached with its lineage, and a second build pretrains nothing (the process's counter)."""
    import torch

    before = quickstart_models.PRETRAININGS
    student = stillroom.build("student", "quickstart", **TINY_PRETRAINED)
    assert quickstart_models.PRETRAININGS == before + 1
    lineage = student.lineage
    assert lineage["pretrained"] is True and lineage["pretraining_steps"] == 20
    assert lineage["pretraining"]["corpus"]["operations"] == 1 and "1-operation facts" in lineage["pretrained_on"]
    assert lineage["checksum"] == quickstart_models.weights_checksum(student.initial_path)
    assert json.loads((student.initial_path / "training.json").read_text()) == lineage
    random_init = stillroom.build("student", "quickstart", shape=TINY_PRETRAINED["shape"])
    assert random_init.initial_path != student.initial_path and random_init.lineage["pretrained"] is False
    assert any(not torch.equal(a, b) for a, b in zip(student.model.parameters(), random_init.model.parameters()))

    again = stillroom.build("student", "quickstart", **TINY_PRETRAINED)
    assert quickstart_models.PRETRAININGS == before + 1  # loaded from the cache: no second pretraining
    assert again.initial_path == student.initial_path and again.lineage == lineage
    for a, b in zip(student.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    longer = {**TINY_PRETRAINED, "pretraining": {**TINY_PRETRAINED["pretraining"], "steps": 21}}
    assert stillroom.build("student", "quickstart", **longer).initial_path != student.initial_path
    assert quickstart_models.PRETRAININGS == before + 2  # another corpus or length is another base


def test_pretraining_corpus_never_holds_a_multi_step_problem():
    from stillroom.plugins.synthetic.config import StudentPretraining

    with pytest.raises(ValueError, match="operations must be 1"):
        StudentPretraining(corpus={"operations": 2})


def test_validation_split_is_disjoint_from_train_and_test(stillroom_host):
    data = build_data(train_size=1500, test_size=200, validation_size=200, seed=0)
    keys = {split: {r["expression"] for r in rows} for split, rows in data.items()}
    assert set(keys) == {"train", "test", "validation"} and len(keys["validation"]) == 200
    assert not keys["validation"] & keys["train"] and not keys["validation"] & keys["test"]
    assert {split_of(Problem(*parse(r["expression"]))) for r in data["validation"]} == {"validation"}
    assert "validation" not in build_data(train_size=10, test_size=10)  # only when asked for
    assert all(r["difficulty"]["max_operand"] == 99 for r in data["train"][:5])  # the task travels with each record


def parse(expression):
    """``23+45-12`` back into (first, steps)."""
    import re

    tokens = re.findall(r"\d+|[+\-*]", expression)
    return int(tokens[0]), tuple((tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2))
