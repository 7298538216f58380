"""Distilling step-by-step: prompts and parsing, the PaLM data loader, the loss weighting, both student
architectures, the inference-time prefix, and rationale extraction through a real (tiny) endpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import stillroom
from stillroom import Completion, Context, Endpoint, GenerationRequest, Subject, Teacher, UserError
from stillroom.plugins.step_by_step.data import StepByStepData, load_split
from stillroom.plugins.step_by_step.evaluation import LabelAccuracy, predicted_label
from stillroom.plugins.step_by_step.extraction import extract_rationales
from stillroom.plugins.step_by_step.method import PREFIX_FILE, PrefixedStudent, StepByStep
from stillroom.plugins.step_by_step.prompts import (Exemplar, PromptOptions, build_prompt, equation_value,
                                                    labels_match, load_exemplars, parse_answer,
                                                    read_exemplars_file, upstream_labels_match)
from stillroom.plugins.step_by_step.training import (TrainingSettings, combine_losses, encode_example,
                                                     train_step_by_step)
from stillroom.training import MethodJob
from stillroom.rundir import RunDirectory
from stillroom.specs import Budget, load_spec
from stillroom.testing import tiny_llama, tiny_tokenizer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data_root(monkeypatch):
    import os

    root = Path(os.environ.get("STILLROOM_DATA") or DATA)
    if not (root / "step_by_step").is_dir():
        pytest.skip("step-by-step data mirror not available (set STILLROOM_DATA)")
    monkeypatch.setenv("STILLROOM_DATA", str(root))
    return root


# ---------------------------------------------------------------------------------------------------------
# Prompts and parsing


def test_prompt_lists_exemplars_then_the_query():
    options = PromptOptions(exemplars=[Exemplar(input="2 + 2?", rationale="Two and two make four.", label="4"),
                                       Exemplar(input="3 + 1?", rationale="Three and one make four.", label="4")])
    prompt = build_prompt(options, load_exemplars(options), "5 + 1?")
    assert prompt == ("Q: 2 + 2?\nA: Two and two make four. So the answer is 4.\n\n"
                      "Q: 3 + 1?\nA: Three and one make four. So the answer is 4.\n\n"
                      "Q: 5 + 1?\nA:")
    custom = PromptOptions(task="cqa", instruction="Answer.", exemplar_template="In: {input}\nOut: {rationale} => {label}",
                           query_template="In: {input}\nOut:", separator="\n")
    text = build_prompt(custom, load_exemplars(custom), "Where?")
    assert text.startswith("Answer.\nIn: Where would you keep milk") and text.endswith("In: Where?\nOut:")
    assert len(load_exemplars(custom)) == 4 and "=> refrigerator" in text


def test_parse_answer_reads_rationale_and_label():
    options = PromptOptions()
    parsed = parse_answer(" Milk must stay cold. A fridge cools. So the answer is (b) refrigerator.\n"
                          "Q: next question\nA: ... So the answer is (a) other.", options)
    assert parsed.ok and parsed.rationale == "Milk must stay cold. A fridge cools." and parsed.label == "refrigerator"
    svamp = parse_answer("48 / 6 = 8. So the answer is ( 48 / 6 ).", PromptOptions(task="svamp"))
    assert svamp.label == "( 48 / 6 )" and equation_value(svamp.label) == 8.0
    # the last marker wins, case-insensitively
    assert parse_answer("so the answer is 3? No. So The Answer Is 4.", options).label == "4"


@pytest.mark.parametrize("text, error", [
    ("", "empty answer"),
    ("   \n", "empty answer"),
    ("I think it is four.", "no answer marker 'So the answer is'"),
    ("So the answer is 4.", "empty rationale"),
    ("Two and two. So the answer is .", "empty label"),
    ("Q: a new question. So the answer is 5.", "no answer marker 'So the answer is'"),  # cut at the stop first
])
def test_parse_answer_reports_malformed_answers(text, error):
    parsed = parse_answer(text, PromptOptions(stop=["Q:"]))
    assert not parsed.ok and parsed.error == error


def test_exemplars_file_errors_name_file_and_line(tmp_path):
    good = tmp_path / "shots.jsonl"
    good.write_text(json.dumps({"input": "a", "rationale": "b", "label": "c"}) + "\n")
    assert read_exemplars_file(good)[0].label == "c"
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"input": "a", "rationale": "b", "label": "c"}) + "\n\n{not json\n")
    with pytest.raises(UserError) as error:
        read_exemplars_file(broken)
    assert error.value.location == f"{broken}:3"
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"input": "a", "label": "c"}) + "\n")
    with pytest.raises(UserError, match="rationale") as error:
        read_exemplars_file(wrong)
    assert error.value.location == f"{wrong}:1"


def test_label_comparison():
    assert labels_match("svamp", "(84 / 2)", "( 84.0 / 2.0 )")
    assert labels_match("svamp", "((3 + 4) * 2)", "( 14.0 )")
    assert not labels_match("svamp", "(84 / 3)", "( 84.0 / 2.0 )")
    assert not labels_match("svamp", "__import__('os')", "( 1.0 )")  # no eval
    assert labels_match("cqa", " Refrigerator.", "refrigerator")
    assert not upstream_labels_match("cqa", "Refrigerator", "refrigerator")  # the reference compares exactly
    assert predicted_label("It is cold. So the answer is (b) fridge.") == "fridge"
    assert predicted_label("( 84.0 / 2.0 )\nmore") == "( 84.0 / 2.0 )"


# ---------------------------------------------------------------------------------------------------------
# The PaLM data


@pytest.mark.parametrize("dataset, counts", [
    ("svamp", {"train": 800, "test": 200}),
    ("cqa", {"train": 9741, "test": 1221}),
    ("anli1", {"valid": 1000, "test": 1000}),
    ("esnli", {"test": 2000}),
])
def test_loader_counts_match_source(data_root, dataset, counts):
    generator = StepByStepData(StepByStepData.Config(dataset=dataset), Context())
    data = generator.build_dataset()
    assert {split: len(rows) for split, rows in data.items()} == counts
    record = data["test"][0]
    assert set(record) >= {"id", "prompt", "answer", "target", "rationale", "teacher_label"}
    assert record["target"] == record["answer"] and record["rationale"]
    files = generator.source_files()
    assert all(Path(f).is_file() for f in files) and any("CoT" in Path(f).name for f in files)


def test_recorded_palm_label_accuracy(data_root):
    folder = data_root / "step_by_step"
    cqa = load_split(folder / "cqa", "cqa", "test")
    svamp = load_split(folder / "svamp", "svamp", "test")
    cqa_acc = sum(upstream_labels_match("cqa", r["teacher_label"], r["answer"]) for r in cqa) / len(cqa)
    svamp_acc = sum(upstream_labels_match("svamp", r["teacher_label"], r["answer"]) for r in svamp) / len(svamp)
    assert round(cqa_acc, 3) == 0.772
    assert round(svamp_acc, 3) == 0.740
    # the first SVAMP train record and its PaLM completion line up
    first = load_split(folder / "svamp", "svamp", "train")[0]
    assert first["prompt"].startswith("Luke scored 84 points") and first["teacher_label"] == "(84 / 2)"
    assert first["rationale"].endswith("84 / 2 = 42.")


def test_malformed_data_names_file_and_line(data_root, tmp_path):
    copy = tmp_path / "svamp"
    shutil.copytree(data_root / "step_by_step" / "svamp", copy)
    train = copy / "svamp_train.json"
    train.chmod(0o644)
    lines = train.read_text().splitlines()
    lines[2] = '{"input": "broken'
    train.write_text("\n".join(lines) + "\n")
    generator = StepByStepData(StepByStepData.Config(dataset="svamp", data_dir=str(tmp_path)), Context())
    with pytest.raises(UserError) as error:
        generator.build_dataset()
    assert error.value.location == f"{train}:3"
    lines[2] = '{"input": "no label here"}'
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="missing field 'label'") as error:
        generator.build_dataset()
    assert error.value.location == f"{train}:3"
    lines.pop(2)
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="799 records but 800 PaLM completions"):
        generator.build_dataset()


def test_label_accuracy_evaluator_scores_answers(data_root):
    evaluator = LabelAccuracy(LabelAccuracy.Config(dataset="svamp", split="test"), Context())
    records = evaluator.records()
    palm = {r["prompt"]: f"{r['rationale']} The answer is {r['teacher_label']}." for r in records}

    def generate(requests, description=None):
        return [[Completion(text=palm[r.prompt])] for r in requests]

    result = evaluator.evaluate(Subject("palm", generate))
    metric = result.metrics[0]
    assert metric.n == 200 and abs(metric.value - 0.74) < 1e-9 and metric.ci_low < 0.74 < metric.ci_high
    assert len(result.samples) == 200 and {"prediction", "gold", "correct"} <= set(result.samples[0])


# ---------------------------------------------------------------------------------------------------------
# Loss weighting


def _hand_loss(model, tokenizer, pairs, is_encoder_decoder=False):
    """Token-mean cross-entropy of (prompt, target) pairs, each sequence run alone (no padding)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, target in pairs:
            example = encode_example(tokenizer, prompt, target, is_encoder_decoder=is_encoder_decoder)
            ids = torch.tensor([example["input_ids"]])
            labels = torch.tensor([example["labels"]])
            if is_encoder_decoder:
                logits = model(input_ids=ids, labels=labels).logits[0]
                targets = labels[0]
            else:
                logits = model(input_ids=ids).logits[0, :-1]
                targets = labels[0, 1:]
            logprobs = torch.log_softmax(logits.double(), dim=-1)
            for position, token in enumerate(targets.tolist()):
                if token != -100:
                    total -= float(logprobs[position, token])
                    count += 1
    return total / count


EXAMPLES = [
    {"input": "what is 2 + 3?", "label": "5", "rationale": "2 plus 3 makes 5, so the answer is 5."},
    {"input": "what is 12 + 7?", "label": "19", "rationale": "12 plus 7 makes 19."},
    {"input": "what is 4 + 4?", "label": "8", "rationale": "4 and 4 is 8; the answer is 8 (eight)."},
]


@pytest.mark.parametrize("weighting, rationale_weight, alpha", [("paper", 1.0, 0.5), ("paper", 0.3, 0.5),
                                                                ("convex", 1.0, 0.7)])
def test_first_step_loss_is_the_weighted_sum(weighting, rationale_weight, alpha):
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer, seed=3)
    label_loss = _hand_loss(model, tokenizer, [("predict: " + e["input"], e["label"]) for e in EXAMPLES])
    rationale_loss = _hand_loss(model, tokenizer, [("explain: " + e["input"], e["rationale"]) for e in EXAMPLES])
    expected = (label_loss + rationale_weight * rationale_loss if weighting == "paper"
                else alpha * label_loss + (1 - alpha) * rationale_loss)
    assert combine_losses(label_loss, rationale_loss, weighting=weighting, rationale_weight=rationale_weight,
                          alpha=alpha) == pytest.approx(expected)
    rows = []
    settings = TrainingSettings(multitask=True, steps=1, batch_size=8, learning_rate=1e-3, seed=0,
                                weighting=weighting, rationale_weight=rationale_weight, alpha=alpha)
    train_step_by_step(model, tokenizer, EXAMPLES, settings, is_encoder_decoder=False, log=rows.append)
    # the first logged loss is taken before the update, on one batch holding all three problems
    assert rows[0]["label_loss"] == pytest.approx(label_loss, rel=1e-5)
    assert rows[0]["rationale_loss"] == pytest.approx(rationale_loss, rel=1e-5)
    assert rows[0]["loss"] == pytest.approx(expected, rel=1e-5)
    # a single mixed batch (the per-record-weight route) would average label and rationale tokens together
    mixed = _hand_loss(tiny_llama(tokenizer, seed=3), tokenizer,
                       [("predict: " + e["input"], e["label"]) for e in EXAMPLES]
                       + [("explain: " + e["input"], e["rationale"]) for e in EXAMPLES])
    assert abs(mixed - (label_loss + rationale_loss) / 2) > 1e-4


# ---------------------------------------------------------------------------------------------------------
# Training through the method, both architectures, the inference-time prefix


def save_tiny_t5(path: Path) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


TOY = [{"id": f"toy-{i}", "prompt": p, "answer": a, "target": a, "rationale": r, "teacher_label": t}
       for i, (p, a, r, t) in enumerate([
           ("what is 2 + 3?", "5", "2 plus 3 makes 5.", "5"),
           ("what is 12 + 7?", "19", "12 plus 7 makes 19.", "18"),
           ("what is 4 + 4?", "8", "4 and 4 is 8.", "8"),
           ("is the sky blue?", "yes", "The sky looks blue by day.", "yes"),
       ])]


def run_method(tmp_path, student, *, teacher=None, steps=120, **options):
    method = stillroom.build("method", "step_by_step", **options)
    run_dir = RunDirectory(tmp_path / "run")
    budget = Budget(steps=steps, batch_size=4, learning_rate=1e-2)
    job = MethodJob(options.get("label") or "sbs", method, teacher, student, {"train": TOY, "test": TOY[:1]},
                    budget, 0, run_dir, student.context)
    return job, method.run(job)


def answers(student, prompts):
    requests = [GenerationRequest(prompt=p, max_tokens=24) for p in prompts]
    return [c[0].text.strip() for c in student.generate(requests)]


@pytest.mark.parametrize("architecture", ["llama", "t5"])
def test_multitask_training_and_prefix_at_inference(stillroom_host, tmp_path, tiny_model_dir, architecture):
    folder = tiny_model_dir if architecture == "llama" else save_tiny_t5(tmp_path / "t5")
    student = stillroom.build("student", "hf", model=str(folder), init="random", device="cpu")
    assert student.is_encoder_decoder == (architecture == "t5")
    job, trained = run_method(tmp_path, student, steps=150 if architecture == "llama" else 200)
    assert isinstance(trained, PrefixedStudent) and trained.prefix == "predict: "
    # the Student role's declared capabilities, read through the wrapper: the inner student's architecture and
    # the folder the trained weights were loaded from; no endpoint (the inner one would answer without prefix)
    assert trained.is_encoder_decoder == (architecture == "t5")
    assert Path(trained.path) == job.run_dir.stage_path("methods/sbs/train") / "model"
    assert trained.endpoint is None and trained.inner.endpoint is not None
    prompts = [r["prompt"] for r in TOY]
    # plain prompts get the label: the student adds "predict: " itself
    assert answers(trained, prompts) == [r["answer"] for r in TOY]
    # the same weights under the rationale prefix explain instead
    explain = PrefixedStudent(trained.inner, "explain: ")
    explained = answers(explain, prompts)
    assert sum(out == r["rationale"] for out, r in zip(explained, TOY)) >= 3  # a few steps; allow one typo
    assert not any(out == r["answer"] for out, r in zip(explained, TOY))
    # saving keeps the prefix next to the model; loading restores it
    saved = tmp_path / "saved"
    trained.save(saved)
    assert json.loads((saved / PREFIX_FILE).read_text())["prefix"] == "predict: "
    again = trained.load(saved)
    assert again.prefix == "predict: " and answers(again, prompts[:2]) == ["5", "19"]
    stage = json.loads((job.run_dir.stage_path("methods/sbs/train") / "stage.json").read_text())
    assert stage["final_rationale_loss"] < stage["mean_rationale_loss"]
    with pytest.raises(UserError, match=PREFIX_FILE):
        PrefixedStudent.restore(trained.inner, tmp_path / "t5" if architecture == "t5" else tiny_model_dir)


def test_chat_messages_are_rewritten_to_the_trained_format():
    class Echo:
        context = Context(cache=None)
        name = "echo"

    raw = PrefixedStudent(Echo(), "predict: ", "raw")
    request = GenerationRequest(messages=[{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "2 + 2?"}])
    assert raw.rewrite(request).prompt == "predict: 2 + 2?" and raw.rewrite(request).messages is None
    chat = PrefixedStudent(Echo(), "predict: ", "chat")
    assert chat.rewrite(GenerationRequest(prompt="2 + 2?")).messages == [{"role": "user", "content": "predict: 2 + 2?"}]
    assert chat.rewrite(request).messages[-1]["content"] == "predict: 2 + 2?"


def test_baselines_use_gold_or_teacher_labels(stillroom_host, tmp_path, tiny_model_dir):
    student = stillroom.build("student", "hf", model=str(tiny_model_dir), init="random", device="cpu")
    method = stillroom.build("method", "step_by_step", mode="label_only", labels="teacher")
    assert method.uses_teacher is False  # the data's teacher labels need no live teacher
    job, trained = run_method(tmp_path, student, mode="label_only", labels="teacher", label="distill")
    assert trained.prefix == ""  # plain fine-tuning format: no task prefix
    examples = [json.loads(line) for line in
                (job.run_dir.stage_path("methods/distill/train") / "examples.jsonl").read_text().splitlines()]
    assert sorted(e["label"] for e in examples) == sorted(r["teacher_label"] for r in TOY)
    assert answers(trained, ["what is 12 + 7?"]) == ["18"]  # it learnt the teacher's (wrong) label
    stage = json.loads((job.run_dir.stage_path("methods/distill/train") / "stage.json").read_text())
    assert "final_rationale_loss" not in stage and stage["examples"] == 4


# ---------------------------------------------------------------------------------------------------------
# Rationale extraction


class CannedEndpoint(Endpoint):
    """Answers every prompt with the text registered for the problem it ends with."""

    name = "canned"

    def __init__(self, answers, context=None):
        super().__init__(None, context)
        self.answers = answers

    def identity(self):
        return {"kind": "canned", "answers": sorted(self.answers.items())}

    def _generate(self, requests):
        out = []
        for request in requests:
            problem = request.prompt.rsplit("Q: ", 1)[1].removesuffix("\nA:")
            out.append([Completion(text=self.answers[problem])])
        return out


class CannedTeacher(Teacher):
    name = "canned"

    def __init__(self, endpoint):
        super().__init__(None, endpoint.context)
        self.endpoint = endpoint


def test_extraction_keeps_parsed_and_optionally_correct_answers(stillroom_env):
    answers_by_problem = {
        "what is 2 + 3?": " 2 plus 3 makes 5. So the answer is 5.\nQ: what is 1 + 1?\nA: 2.",
        "what is 12 + 7?": " 12 plus 7 is 18. So the answer is 18.",  # wrong label
        "what is 4 + 4?": " It is eight.",  # no marker
        "is the sky blue?": " The sky scatters blue light. So the answer is yes.",
    }
    endpoint = CannedEndpoint(answers_by_problem, Context())
    options = PromptOptions(stop=["\nQ:"])
    kept, stats = extract_rationales(endpoint.generate, TOY, options)
    assert [r["id"] for r in kept] == ["toy-0", "toy-1", "toy-3"]
    assert kept[0]["rationale"] == "2 plus 3 makes 5." and kept[0]["teacher_label"] == "5"
    assert stats["parse_failures"] == {"no answer marker 'So the answer is'": 1} and stats["parsed"] == 3
    kept, stats = extract_rationales(endpoint.generate, TOY, options, require_correct=True)
    assert [r["id"] for r in kept] == ["toy-0", "toy-3"] and stats["incorrect"] == 1
    assert endpoint.stats["requests"] == 4 and endpoint.stats["cache_hits"] == 4


def test_method_extracts_rationales_from_the_teacher(stillroom_host, tmp_path, tiny_model_dir):
    answers_by_problem = {r["prompt"]: f" {r['rationale']} So the answer is {r['teacher_label']}." for r in TOY}
    teacher = CannedTeacher(CannedEndpoint(answers_by_problem, Context()))
    student = stillroom.build("student", "hf", model=str(tiny_model_dir), init="random", device="cpu")
    job, trained = run_method(tmp_path, student, teacher=teacher, steps=5, rationales="teacher", labels="teacher")
    assert teacher.endpoint.stats["requests"] == 4
    stage = json.loads((job.run_dir.stage_path("methods/sbs/rationales") / "stage.json").read_text())
    assert stage["kept"] == 4 and stage["teacher_requests"] == 4
    # a resumed run skips the finished stages: no new teacher calls
    job.method.run(job)
    assert teacher.endpoint.stats["requests"] == 4


def test_extraction_through_hf_endpoint_is_cached(stillroom_host, data_root, tiny_model_dir):
    endpoint = stillroom.build("endpoint", "hf", model=str(tiny_model_dir), device="cpu")
    context = Context(endpoints={"tiny": endpoint})
    generator = context.build("generator", "rationales", endpoint="tiny", task="svamp", max_tokens=12, limit=3,
                              source={"kind": "step_by_step_data", "dataset": "svamp", "max_records": 5})
    data = generator.build_dataset()
    stats = generator.stats["train"]
    assert stats["requested"] == 3
    # a random tiny model writes garbage: whatever fails to parse is counted and dropped, nothing crashes
    assert stats["parsed"] + sum(stats["parse_failures"].values()) == 3 and len(data["train"]) == stats["kept"]
    assert len(data["test"]) == 5 and endpoint.stats["requests"] == 3
    again = context.build("generator", "rationales", endpoint="tiny", task="svamp", max_tokens=12, limit=3,
                          source={"kind": "step_by_step_data", "dataset": "svamp", "max_records": 5})
    assert again.build_dataset() == data
    assert endpoint.stats["requests"] == 3 and endpoint.stats["cache_hits"] == 3  # second run: no new calls


def test_example_spec_validates(stillroom_host):
    spec = load_spec(ROOT / "examples" / "step_by_step_svamp.toml")
    kinds = [(m.label, m.mode, m.labels) for m in spec.methods]
    assert kinds == [("step_by_step", "multitask", "gold"), ("finetune_gold", "label_only", "gold"),
                     ("distill_palm_labels", "label_only", "teacher")]


def test_config_rejects_contradictions(stillroom_host):
    with pytest.raises(UserError, match="must differ"):
        stillroom.build("method", "step_by_step", label_prefix="x: ", rationale_prefix="x: ")
    with pytest.raises(UserError, match="unknown field"):
        stillroom.build("method", "step_by_step", lambda_=1.0)
    assert StepByStep.uses_teacher is False
    assert stillroom.build("method", "step_by_step", rationales="teacher").uses_teacher is True
    assert stillroom.build("method", "step_by_step").uses_teacher is False


def test_budget_warm_up_replaces_warmup_steps_and_both_at_once_is_a_located_error(stillroom_host, tmp_path):
    method = stillroom.build("method", "step_by_step", label="sbs", warmup_steps=5)
    budget = Budget(steps=10, warmup_ratio=0.2)
    job = MethodJob("sbs", method, None, None, {"train": TOY}, budget, 0, RunDirectory(tmp_path / "run"), Context())
    with pytest.raises(UserError, match=r"methods\[sbs\]\.warmup_steps: warmup_steps = 5 conflicts with "
                                        r"budget\.warmup_ratio = 0\.2"):
        method.settings(job, seed=0)
    shared = stillroom.build("method", "step_by_step", label="sbs")
    job = MethodJob("sbs", shared, None, None, {"train": TOY}, budget, 0, RunDirectory(tmp_path / "run2"), Context())
    assert shared.settings(job, seed=0).warmup_ratio == 0.2
