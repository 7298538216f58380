"""The joint_teaching method: its schedules, pseudo-target rotation, options checks, and short real runs with
a white-box hf teacher (same tokenizer, another tokenizer, a T5 student), with an API teacher served by
`stillroom serve` on loopback, and resuming a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import stillroom
from stillroom import Context, MethodJob, RunDirectory, UserError
from stillroom.plugins.joint_teaching import schedule
from stillroom.plugins.joint_teaching.scoring import noisy
from stillroom.specs import Budget, load_spec
from stillroom.testing import save_tiny_model, served_model, tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]
DATA = {"train": [{"id": f"q{i}", "prompt": f"What is {i} + 7?", "target": f"The answer is {i + 7}."}
                  for i in range(12)],
        "test": [{"id": "t0", "prompt": "What is 3 + 4?", "target": "The answer is 7."}]}
BUDGET = Budget(train_examples=8, steps=8, batch_size=4, learning_rate=5e-3)
SMALL = {"max_new_tokens": 12, "eval_examples": 8}


# -- schedules and rotation (pure) ----------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.25, 0.2, 0.7])
def test_fixed_schedule_uses_student_targets_on_every_round_one_over_alpha_th_step(alpha):
    steps = 60
    plan = schedule.student_steps(steps, alpha, "fixed", seed=0)
    period = round(1 / alpha)
    assert [s + 1 for s, used in enumerate(plan) if used] == list(range(period, steps + 1, period))
    assert sum(plan) == steps // period


def test_fixed_schedule_ends_and_random_schedule_frequency():
    assert schedule.student_steps(10, 0.0, "fixed", 0) == [False] * 10
    assert schedule.student_steps(10, 1.0, "fixed", 0) == [True] * 10
    for alpha in (0.1, 0.5, 0.8):
        plan = schedule.student_steps(4000, alpha, "random", seed=3)
        assert abs(sum(plan) / len(plan) - alpha) < 0.03
    assert schedule.student_steps(50, 0.5, "random", 1) == schedule.student_steps(50, 0.5, "random", 1)
    assert schedule.student_steps(50, 0.5, "random", 1) != schedule.student_steps(50, 0.5, "random", 2)


def test_every_epoch_sees_every_example_once_and_uses_target_e_mod_k():
    examples, batch, steps, pool = 10, 4, 20, 3
    plan = schedule.batches(examples, steps, batch, seed=0)
    by_epoch: dict[int, list[int]] = {}
    for picks in plan:
        assert len(picks) == batch
        for pick in picks:
            by_epoch.setdefault(pick.epoch, []).append(pick.example)
    complete = [e for e in by_epoch if e < max(by_epoch)]
    assert complete == list(range(len(complete))) and len(complete) >= 5
    for epoch in complete:
        assert sorted(by_epoch[epoch]) == list(range(examples))
    assert [schedule.target_index(e, pool) for e in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert schedule.batches(3, 2, 8, seed=0)[0] and len(schedule.batches(3, 2, 8, seed=0)[0]) == 3


def test_options_that_cannot_work_are_config_errors(stillroom_host):
    with pytest.raises(UserError, match="greedy"):
        stillroom.build("method", "joint_teaching", decoding="greedy", pseudo_targets=2)
    with pytest.raises(UserError, match="include_gold"):
        stillroom.build("method", "joint_teaching", pseudo_targets=0, alpha=0)
    with pytest.raises(UserError, match="own samples"):
        stillroom.build("method", "joint_teaching", loss="ce", alpha=0.5)
    with pytest.raises(UserError, match="unknown loss kind"):
        stillroom.build("method", "joint_teaching", loss="no_such_loss")
    method = stillroom.build("method", "joint_teaching", loss={"kind": "gjsd", "beta": 0.3, "temperature": 2.0})
    assert method.config.loss_kind == "gjsd" and method.config.loss_options() == {"beta": 0.3, "temperature": 2.0}


def test_the_loss_is_scaled_by_the_square_of_its_declared_temperature(stillroom_host):
    from stillroom.plugins.joint_teaching.training import Distiller

    def scale(squared: bool, **loss) -> float:
        method = stillroom.build("method", "joint_teaching", loss=loss, temperature_squared=squared)
        built = stillroom.build("loss", loss["kind"], **{k: v for k, v in loss.items() if k != "kind"})
        return Distiller(student=None, teacher=None, config=method.config, access="none", loss=built,
                         sparse_loss=None, where="methods[jt]").scale

    assert scale(True, kind="forward_kl", temperature=2.0) == 4.0
    assert scale(False, kind="forward_kl", temperature=2.0) == 1.0
    assert scale(True, kind="gjsd", beta=0.3, temperature=0.5) == 0.25
    assert scale(True, kind="forward_kl") == 1.0


def test_example_spec_validates(stillroom_host):
    spec = load_spec(REPO / "examples" / "joint_teaching_api.toml", stillroom_host)
    entries = [m for m in spec.methods if m.kind == "joint_teaching"]
    assert {m.label for m in entries} == {"pt_seqkd", "pt_logits_kd", "pt_joint"}
    assert spec.endpoints["teacher"].base_url == "http://127.0.0.1:8000/v1"


# -- real runs ----------------------------------------------------------------------------------------------

def make_job(run_dir: Path, teacher, student_options: dict, *, label="jt", budget=BUDGET, data=DATA, **options):
    context = Context(seed=0, run_dir=run_dir)
    method = stillroom.build("method", "joint_teaching", **{**SMALL, **options})
    student = stillroom.build("student", "hf", context=context, **student_options)
    return MethodJob(label, method, teacher, student, data, budget, 0, RunDirectory(run_dir), context)


def train_metrics(job) -> dict:
    return job.run_dir.stage_metrics(f"methods/{job.label}/train")


@pytest.fixture(scope="module")
def hf_teacher(tiny_teacher_dir):
    from stillroom.plugin_manager import make_host, use_host

    previous = use_host(make_host(distributions={"stillroom"}))
    try:
        yield stillroom.build("teacher", "hf", model=str(tiny_teacher_dir), device="cpu")
    finally:
        use_host(previous)


def test_hf_teacher_joint_teaching_lowers_the_kd_loss_and_resumes(stillroom_host, hf_teacher, tiny_model_dir,
                                                                   tmp_path):
    job = make_job(tmp_path / "run", hf_teacher, {"model": str(tiny_model_dir), "device": "cpu"},
                   pseudo_targets=2, alpha=0.5, budget=Budget(train_examples=8, steps=12, batch_size=4,
                                                              learning_rate=1e-2))
    assert hf_teacher.white_box
    trained = job.method.run(job)
    metrics = train_metrics(job)
    assert metrics["teacher_access"] == "logits" and metrics["same_vocabulary"] is True
    assert metrics["kd_loss_after"] < metrics["kd_loss_before"]
    assert metrics["student_steps"] == 6  # alpha 0.5, fixed: steps 2, 4, ..., 12
    # 8 examples, batches of 4: epochs 0..5, each on pseudo-target e mod 2
    assert metrics["rotation"] == {str(e): [e % 2] for e in range(6)}
    rows = [json.loads(line) for line in
            (job.run_dir.stage_path("methods/jt/pseudo_targets") / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["pts"]) == 2 for r in rows)
    assert len(json.loads((job.run_dir.stage_path("methods/jt/train") / "losses.json").read_text())) == 12
    assert job.info["student_steps"] == 6

    # a second run of the method on the same run directory loads the result instead of retraining
    again = make_job(tmp_path / "run", hf_teacher, {"model": str(tiny_model_dir), "device": "cpu"},
                     pseudo_targets=2, alpha=0.5, budget=Budget(train_examples=8, steps=12, batch_size=4,
                                                                learning_rate=1e-2))
    requests = hf_teacher.endpoint.stats["requests"]
    reloaded = again.method.run(again)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    skipped = [e["stage"] for e in events if e["event"] == "stage_skipped"]
    assert skipped == ["methods/jt/pseudo_targets", "methods/jt/train"]
    assert hf_teacher.endpoint.stats["requests"] == requests
    first, second = trained.model.state_dict(), reloaded.model.state_dict()
    assert all((first[k] == second[k]).all() for k in first)


def test_ladder_rungs_run(stillroom_host, hf_teacher, tiny_model_dir, tmp_path):
    student = {"model": str(tiny_model_dir), "device": "cpu"}
    budget = Budget(train_examples=4, steps=3, batch_size=4, learning_rate=5e-3)
    rungs = {
        "finetune": dict(loss="ce", pseudo_targets=0, include_gold=True, alpha=0),
        "seqkd_beam": dict(loss="ce", pseudo_targets=1, decoding="beam", alpha=0),
        "logits_kd_gold": dict(pseudo_targets=0, include_gold=True, alpha=0),
        "multi_beam": dict(pseudo_targets=2, decoding="beam", num_beams=2, alpha=0),
        "student_only": dict(pseudo_targets=1, decoding="greedy", alpha=1.0),
        "noisy_gjsd": dict(pseudo_targets=1, alpha=0, teacher_dropout=0.2, loss={"kind": "gjsd", "beta": 0.5}),
        "random_mix": dict(pseudo_targets=2, alpha=0.5, schedule="random", sampling_temperature=1.5),
    }
    results = {}
    for label, options in rungs.items():
        job = make_job(tmp_path / "run", hf_teacher, student, label=label, budget=budget, eval_examples=4,
                       **options)
        job.method.run(job)
        results[label] = train_metrics(job)
        assert results[label]["steps"] == 3 and results[label]["loss"] >= 0, label
    assert results["finetune"]["teacher_access"] == "none" and results["seqkd_beam"]["teacher_access"] == "none"
    assert results["logits_kd_gold"]["teacher_access"] == "logits"
    assert results["multi_beam"]["rotation"] == {"0": [0], "1": [1], "2": [0]}  # 4 examples, batch 4
    assert results["student_only"]["student_steps"] == 3
    assert 0 <= results["random_mix"]["student_steps"] <= 3


def test_noisy_kd_perturbs_the_teacher_and_restores_it(hf_teacher):
    import torch

    model = hf_teacher.model
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        with noisy(model, 0.3):
            assert model.training
            shaken = model(input_ids=ids).logits
        restored = model(input_ids=ids).logits
    assert not model.training
    assert not torch.allclose(clean, shaken) and torch.equal(clean, restored)


def test_teacher_with_another_tokenizer_is_aligned(stillroom_host, hf_teacher, tiny_model_dir, tmp_path):
    corpus = ("Numbers and words: seven plus twelve is nineteen. What is 5 + 7? The answer is 12.\n"
              "A different corpus, a different vocabulary: alpha beta gamma delta 0 1 2 3 4 5 6 7 8 9 + = ?")
    folder = save_tiny_model(tmp_path / "other", corpus=corpus, vocab_size=400, layers=1, hidden=32, seed=3)
    teacher = stillroom.build("teacher", "hf", model=str(folder), device="cpu")
    assert teacher.tokenizer.get_vocab() != hf_teacher.tokenizer.get_vocab()
    job = make_job(tmp_path / "run", teacher, {"model": str(tiny_model_dir), "device": "cpu"},
                   pseudo_targets=1, alpha=0.5, budget=Budget(train_examples=8, steps=8, batch_size=4,
                                                              learning_rate=1e-2))
    job.method.run(job)
    metrics = train_metrics(job)
    assert metrics["same_vocabulary"] is False
    assert 0.3 < metrics["matched_positions"] < 1.0
    assert metrics["kd_loss_after"] < metrics["kd_loss_before"]


def test_a_teacher_with_padding_rows_shares_the_vocabulary(stillroom_host, tiny_teacher_dir, tiny_model_dir,
                                                            tmp_path):
    """One tokenizer, embedding matrices of different sizes (Qwen2.5-7B's 152,064 rows against 0.5B's 151,936):
    the engine's vocabulary check with ``padded_rows`` keeps the dense loss, compared up to the narrower width."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    model.resize_token_embeddings(len(tokenizer) + 8)  # rows no token maps to
    model.save_pretrained(tmp_path / "padded")
    tokenizer.save_pretrained(tmp_path / "padded")
    teacher = stillroom.build("teacher", "hf", model=str(tmp_path / "padded"), device="cpu")
    assert teacher.model.config.vocab_size == len(tokenizer) + 8
    job = make_job(tmp_path / "run", teacher, {"model": str(tiny_model_dir), "device": "cpu"}, pseudo_targets=0,
                   include_gold=True, alpha=0, budget=Budget(train_examples=4, steps=2, batch_size=4,
                                                             learning_rate=1e-2))
    job.method.run(job)
    metrics = train_metrics(job)
    assert metrics["teacher_access"] == "logits" and metrics["same_vocabulary"] is True
    assert metrics["matched_positions"] == 1.0  # dense: every position compared, none mapped through token texts


def test_t5_student_learns_from_a_causal_teacher(stillroom_host, hf_teacher, tiny_teacher_dir, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tiny_tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=16, num_layers=1, num_decoder_layers=1,
                      num_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.0)
    folder = tmp_path / "t5"
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    job = make_job(tmp_path / "run", hf_teacher, {"model": str(folder), "device": "cpu"}, pseudo_targets=1,
                   alpha=0.5, budget=Budget(train_examples=8, steps=8, batch_size=4, learning_rate=1e-2))
    trained = job.method.run(job)
    assert trained.is_encoder_decoder
    metrics = train_metrics(job)
    assert metrics["same_vocabulary"] is True and metrics["student_steps"] == 4
    assert metrics["kd_loss_after"] < metrics["kd_loss_before"]


# -- an API teacher: `stillroom serve` on loopback ------------------------------------------------------------

@pytest.fixture(scope="module")
def served_teacher(tiny_teacher_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("jt-serve")
    with served_model(tiny_teacher_dir, home=home, log=home / "server.log", name="tiny", device="cpu") as base:
        yield f"{base}/v1"


def api_teacher(base_url: str, run_dir: Path, *, scoring: bool = True):
    context = Context(seed=0, run_dir=run_dir)
    endpoint = stillroom.build("endpoint", "openai", context=context, base_url=base_url, model="tiny")
    if not scoring:  # an OpenAI-compatible API that only generates (OpenAI's chat models, say)
        endpoint.can_score = False
    context.endpoints["teacher"] = endpoint
    return stillroom.build("teacher", "api", context=context, endpoint="teacher")


def test_api_teacher_scores_student_pseudo_targets(stillroom_host, served_teacher, tiny_model_dir, tmp_path):
    """Joint teaching with an API teacher: student pseudo-targets are scored through `stillroom serve`'s prompt
    scoring (vLLM's prompt_logprobs), so the student's steps train on the teacher's distribution too."""
    teacher = api_teacher(served_teacher, tmp_path / "run")
    job = make_job(tmp_path / "run", teacher, {"model": str(tiny_model_dir), "device": "cpu"}, label="joint",
                   pseudo_targets=1, decoding="greedy", alpha=0.5, top_logprobs=5,
                   budget=Budget(train_examples=8, steps=8, batch_size=4, learning_rate=1e-2))
    requests_before = teacher.endpoint.stats["requests"]
    job.method.run(job)
    metrics = train_metrics(job)
    assert metrics["student_steps"] == 4 and metrics["fallback_steps"] == 0
    # every student step sent its 4 pseudo-targets to be scored, and counted what the teacher ran forward
    assert teacher.endpoint.stats["requests"] - requests_before >= 8 + 4 * 4
    assert metrics["teacher_forward_tokens"] > 0
    # same tokenizer: the scored top-k lands on nearly every position
    assert metrics["matched_positions"] >= 0.9


def test_api_teacher_pseudo_targets_carry_top_k_and_train(stillroom_host, served_teacher, tiny_model_dir, tmp_path):
    teacher = api_teacher(served_teacher, tmp_path / "run")
    assert teacher.model is None and not teacher.white_box
    job = make_job(tmp_path / "run", teacher, {"model": str(tiny_model_dir), "device": "cpu"}, pseudo_targets=2,
                   alpha=0.0, top_logprobs=5, budget=Budget(train_examples=8, steps=8, batch_size=4,
                                                            learning_rate=1e-2))
    job.method.run(job)
    rows = [json.loads(line) for line in
            (job.run_dir.stage_path("methods/jt/pseudo_targets") / "records.jsonl").read_text().splitlines()]
    tokens = [t for r in rows for pt in r["pts"] for t in pt["tokens"]]
    assert tokens and all(1 <= len(top) <= 6 for _, _, top in tokens)
    assert all(any(alt == token for alt, _ in top) for token, _, top in tokens)  # the chosen token is listed
    metrics = train_metrics(job)
    assert metrics["teacher_access"] == "top_logprobs" and metrics["student_steps"] == 0
    # same tokenizer on both sides: nearly every position gets the teacher's distribution (EOS does not)
    assert metrics["matched_positions"] >= 0.5
    assert metrics["kd_loss_after"] < metrics["kd_loss_before"]

    # an endpoint that cannot score a given text: an explicit error, or the chosen fallback
    mute = api_teacher(served_teacher, tmp_path / "run", scoring=False)
    refused = make_job(tmp_path / "run", mute, {"model": str(tiny_model_dir), "device": "cpu"}, label="mix",
                       pseudo_targets=2, alpha=0.5, top_logprobs=5)
    with pytest.raises(UserError, match="cannot score") as caught:
        refused.method.run(refused)
    assert caught.value.location == "methods[mix].alpha"
    fallback = make_job(tmp_path / "run", mute, {"model": str(tiny_model_dir), "device": "cpu"}, label="mix",
                        pseudo_targets=2, alpha=0.5, top_logprobs=5, black_box_student_targets="teacher_targets")
    fallback.method.run(fallback)
    assert train_metrics(fallback)["fallback_steps"] == 4 and train_metrics(fallback)["student_steps"] == 0
    beam = make_job(tmp_path / "run", teacher, {"model": str(tiny_model_dir), "device": "cpu"}, label="beam",
                    decoding="beam", alpha=0)
    with pytest.raises(UserError, match="beam"):
        beam.method.run(beam)
    # full logits asked of a teacher behind an API: the engine's white-box check, at the option that asks
    logits = make_job(tmp_path / "run", teacher, {"model": str(tiny_model_dir), "device": "cpu"}, label="logits",
                      teacher_access="logits", alpha=0)
    with pytest.raises(UserError, match="white-box teacher .* 'api' exposes no model") as caught:
        logits.method.run(logits)
    assert caught.value.location == "methods[logits].teacher_access"
