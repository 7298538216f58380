"""logit_kd and `stillroom capture`: the teacher scores each token once across commands, methods and seeds, and
training on the stored signal brings the student closer to the teacher on held-out text."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import stillroom
from stillroom import Context, MethodJob, RunDirectory
from stillroom.specs import Budget

SUBJECTS = ["the sea", "a fox", "prime numbers", "the sky", "a teacher", "a student", "twelve", "the lazy dog"]


def records(count: int, offset: int = 0):
    out = []
    for i in range(offset, offset + count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        out.append({"id": f"r{i}", "prompt": f"Write a short line about {subject}. ({i})",
                    "target": f"The answer is {subject}; {i} plus 7 makes {i + 7}."})
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def held_out_kl(teacher, student, rows) -> float:
    """Mean full-vocabulary KL(teacher || student) over the target tokens of ``rows``."""
    import torch

    total = count = 0.0
    with torch.no_grad():
        for row in rows:
            ids, labels, _ = student.encode_example(row)
            inputs = torch.tensor([ids])
            t = torch.log_softmax(teacher.model(input_ids=inputs).logits[0, :-1].float(), -1)
            s = torch.log_softmax(student.model(input_ids=inputs).logits[0, :-1].float(), -1)
            targets = torch.tensor(labels[1:]) != -100
            kl = (t.exp() * (t - s)).sum(-1)[targets]
            total += float(kl.sum())
            count += int(targets.sum())
    return total / count


def test_logit_kd_lowers_held_out_kl_to_the_teacher(stillroom_host, tiny_model_dir, tiny_teacher_dir, tmp_path):
    context = Context(seed=0, run_dir=tmp_path, progress=False)
    teacher = stillroom.build("teacher", "hf", context=context, model=str(tiny_teacher_dir), dtype="float32")
    # A randomly initialised teacher is nearly uniform over its 600 tokens, which no top-k signal describes;
    # sharpening its output (as training would) gives it the peaked distributions real teachers have.
    with __import__("torch").no_grad():
        teacher.model.model.norm.weight.mul_(8.0)
    student = stillroom.build("student", "hf", context=context, model=str(tiny_model_dir))
    method = stillroom.build("method", "logit_kd", top_k=16)
    data = {"train": records(16), "test": records(6, offset=100)}
    run_dir = RunDirectory(tmp_path / "run")
    job = MethodJob("kd", method, teacher, student.fresh(), data,
                    Budget(steps=30, batch_size=8, learning_rate=3e-3), 0, run_dir, context)
    before = held_out_kl(teacher, job.student, data["test"])
    trained = method.run(job)
    after = held_out_kl(teacher, trained, data["test"])
    assert after < 0.5 * before, (before, after)
    capture = run_dir.stage_metrics("methods/kd/teacher_signals")
    train = run_dir.stage_metrics("methods/kd/train")
    tokens = sum(len(student.encode_example(r)[0]) for r in data["train"])
    assert capture["teacher_forward_tokens"] == tokens and train["teacher_forward_tokens"] == 0
    assert train["optimizer_steps"] == 30 and train["signal_key"] == capture["key"]
    assert capture["bytes_per_token"] < 16 * 3  # 16 alternatives in well under 3 bytes each


def capture_app():
    from stillroom.plugins.logit_kd.capture_command import capture

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command keeps its name
    app.command("capture")(capture)
    return app


def test_capture_command_twice_scores_nothing_the_second_time(stillroom_host, tiny_model_dir, tiny_teacher_dir,
                                                               tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(6)))
    arguments = ["capture", "--model", str(tiny_teacher_dir), "--student", str(tiny_model_dir), "--data", str(data),
                 "--top-k", "8", "--dtype", "float32", "--format", "json"]
    runs = []
    for _ in range(2):
        result = CliRunner().invoke(capture_app(), arguments)
        assert result.exit_code == 0, result.output
        runs.append(json.loads(result.output))
    first, second = runs
    assert first["key"] == second["key"] and first["tokens"] == second["tokens"] > 0
    assert first["teacher_forward_tokens"] > first["tokens"]  # the prompt is run forward too
    assert second["teacher_forward_tokens"] == 0
    assert first["bytes_per_token"] < 8 * 3
    # text output names the key and the reuse
    text = CliRunner().invoke(capture_app(), arguments[:-2])
    assert first["key"] in text.output and "nothing scored" in text.output
    bad = CliRunner().invoke(capture_app(), ["capture", "--model", "http://127.0.0.1:9/v1", "--data", str(data)])
    assert bad.exit_code != 0 and "--student" in str(bad.exception)


SPEC = """
name = "signals-once"
seeds = [0, 1, 2]

[teacher]
kind = "hf"
model = "{teacher}"
dtype = "float32"

[student]
kind = "hf"
model = "{student}"

[data]
kind = "file"
path = "{data}"
test_size = 2

[budget]
train_examples = 8
steps = 2
batch_size = 4
learning_rate = 1e-3

[evaluate]
teacher = false
base = false

[[methods]]
kind = "logit_kd"
label = "kd_forward"
top_k = 8

[[methods]]
kind = "logit_kd"
label = "kd_reverse"
top_k = 8
loss = {{ kind = "topk_reverse_kl" }}

[[methods]]
kind = "gkd"
lmbda = 0.0
loss = {{ kind = "topk_forward_kl", k = 8 }}

[[methods]]
kind = "joint_teaching"
pseudo_targets = 0
include_gold = true
alpha = 0.0
loss = {{ kind = "topk_forward_kl", k = 8 }}
"""


def test_a_spec_over_three_seeds_scores_each_teacher_token_once(stillroom_host, tiny_model_dir, tiny_teacher_dir,
                                                                tmp_path):
    """logit_kd (two entries), gkd and joint_teaching over three seeds train on the same 8 sequences (the
    student's encoding) with k = 8: one capture, and over all twelve entries the teacher runs forward exactly
    once over each sequence, counted in exactly one stage."""
    from stillroom.paths import cache_dir
    from stillroom.runs import execute

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(10)))
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(teacher=tiny_teacher_dir, student=tiny_model_dir, data=data))
    run = execute(spec)
    stages = run.dir.root / "stages" / "methods"
    metrics = {str(p.parent.relative_to(stages)): json.loads(p.read_text()) for p in sorted(stages.rglob("stage.json"))}
    for label in ("kd_forward", "kd_reverse", "gkd", "joint_teaching"):
        for seed in (0, 1, 2):
            assert any(name.startswith(f"{label}/seed{seed}/") for name in metrics)
    # the teacher's work, counted independently: each distinct training sequence (prompt + target + EOS, as the
    # student encodes it) run forward once
    student = stillroom.build("student", "hf", model=str(tiny_model_dir))
    rows = stillroom.read_jsonl(run.dir.root / "stages" / "data" / "train.jsonl")[:8]
    encoded = {tuple(ids): labels for ids, labels, _ in (student.encode_example(r) for r in rows)}
    assert len(encoded) == 8
    once = sum(len(ids) for ids in encoded)
    targets = sum(sum(label != -100 for label in labels) for labels in encoded.values())
    total = sum(m.get("teacher_forward_tokens", 0) for m in metrics.values())
    assert total == once, {name: m.get("teacher_forward_tokens") for name, m in metrics.items()}
    paid = [name for name, m in metrics.items() if m.get("teacher_forward_tokens")]
    assert len(paid) == 1, paid
    keys = {m.get("key") or m.get("signal_key") for m in metrics.values()} - {None}
    assert len(keys) == 1, keys
    (key,) = keys
    manifest = json.loads((cache_dir() / "signals" / key / "manifest.json").read_text())
    assert manifest["teacher_forward_tokens"] == once and manifest["sequences"] == 8
    assert sum(shard["tokens"] for shard in manifest["shards"].values()) == targets  # one row per target token
    for seed in (0, 1, 2):
        gkd, joint = metrics[f"gkd/seed{seed}/train"], metrics[f"joint_teaching/seed{seed}/train"]
        # every off-policy batch of both read the store; the teacher never ran inside training
        assert gkd["signal_key"] == joint["signal_key"] == key
        assert gkd["stored_signal_batches"] == 2 and gkd["teacher_forward_batches"] == 0
        assert joint["stored_signal_batches"] >= 2


def test_gkd_off_policy_batches_read_the_store(stillroom_host, tiny_model_dir, tiny_teacher_dir, tmp_path):
    """gkd with a top-k loss: its off-policy batches take the teacher's top-k from the store, captured once for
    the training rows as TRL's collator tokenizes them; a second entry over the same rows runs no teacher."""
    teacher = stillroom.build("teacher", "hf", model=str(tiny_teacher_dir), device="cpu")
    student = stillroom.build("student", "hf", model=str(tiny_model_dir), device="cpu")
    run_dir = RunDirectory(tmp_path / "run")
    data = {"train": records(12), "test": records(2, offset=50)}
    first_losses = []
    for label in ("gkd_a", "gkd_b"):
        method = stillroom.build("method", "gkd", lmbda=0.0, steps=3, batch_size=4, learning_rate=5e-3, label=label,
                                 loss={"kind": "topk_forward_kl", "k": 8})
        job = MethodJob(label, method, teacher, student.fresh(), data, Budget(train_examples=8), 0, run_dir,
                        Context(seed=0, cache=None))
        method.run(job)
        metrics = run_dir.stage_metrics(f"methods/{label}/train")
        assert metrics["stored_signal_batches"] == 3 and metrics["teacher_forward_batches"] == 0
        # the teacher ran only for the capture: never inside training
        assert metrics["teacher_forward_tokens"] == metrics["signal_capture_tokens"]
        first_losses.append(metrics["first_loss"])
    first, second = (run_dir.stage_metrics(f"methods/{label}/train") for label in ("gkd_a", "gkd_b"))
    assert first["signal_capture_tokens"] > 0 and second["signal_capture_tokens"] == 0
    assert first["signal_key"] == second["signal_key"]
    assert first_losses[0] == pytest.approx(first_losses[1])  # same rows, same seed, same stored signal


def test_stored_rows_give_the_loss_the_teacher_forward_gives(stillroom_host, tiny_model_dir, tiny_teacher_dir,
                                                             tmp_path):
    """On a batch as TRL's GKD collator builds it (left-padded, prompt masked), the top-k loss from the stored
    signal equals the one from the teacher's own logits up to the codec's 8-bit quantisation."""
    import torch
    from trl.experimental.gkd.gkd_trainer import DataCollatorForChatML

    from stillroom.signals import SignalIndex, SignalStore, teacher_signals

    teacher = stillroom.build("teacher", "hf", model=str(tiny_teacher_dir), device="cpu", dtype="float32")
    student = stillroom.build("student", "hf", model=str(tiny_model_dir), device="cpu")
    collate = DataCollatorForChatML(tokenizer=student.tokenizer, max_length=256)
    rows = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["target"]}]}
            for r in records(3)]
    sequences = []
    for row in rows:
        one = collate([row])
        real = one["attention_mask"][0].bool()
        sequences.append((one["input_ids"][0][real].tolist(), (one["labels"][0][real] != -100).tolist()))
    _, signals = teacher_signals(teacher, student.tokenizer, sequences, 8, store=SignalStore(tmp_path))
    batch = collate(rows)
    indices, logprobs = SignalIndex(sequences, signals).batch(batch["input_ids"], batch["attention_mask"],
                                                               batch["labels"])
    loss = stillroom.build("loss", "topk_forward_kl", k=8)
    with torch.no_grad():
        logits = student.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        teacher_logits = teacher.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    exact = float(loss(logits[:, :-1], teacher_logits[:, :-1], labels))
    stored = float(loss(logits[:, :-1], (indices[:, 1:], logprobs[:, 1:]), labels))
    assert stored == pytest.approx(exact, rel=5e-3)
