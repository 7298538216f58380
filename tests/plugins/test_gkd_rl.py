"""The gkd_rl method on tiny real models and TRL's real GRPOTrainer: alpha = 1 is on-policy GKD on the same
samples, alpha = 0 leaves the teacher without influence, the loss mixes the two terms linearly, a reward that
prefers one answer moves the student toward it, an LLM judge served by `stillroom serve` is a cached reward,
and rewards as declared interfaces (RewardScorer) are checked when a spec is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import torch

import stillroom
from stillroom import Context, MethodJob, RewardScorer, RunDirectory, UserError
from stillroom.cache import CallCache
from stillroom.specs import Budget
from stillroom.testing import served_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def records(start, count):
    return [{"id": str(i), "prompt": f"What is {i} + 7?", "target": f"The answer is {i + 7}."}
            for i in range(start, start + count)]


DATA = {"train": records(0, 16), "test": records(100, 4)}


@pytest.fixture
def models(stillroom_host, tiny_model_dir, tiny_teacher_dir):
    student = stillroom.build("student", "hf", model=str(tiny_model_dir), device="cpu")
    teacher = stillroom.build("teacher", "hf", model=str(tiny_teacher_dir), device="cpu")
    return student, teacher


def completion_length(prompts, completions, **_):
    """A reward that differs between samples of one prompt, so GRPO's advantages are not all zero."""
    return [float(len(c[-1]["content"])) for c in completions]


def grpo_trainer(student, teacher, alpha, loss, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig

    from stillroom import training
    from stillroom.plugins.gkd_rl.trainer import trainer_class

    args = training.training_arguments(tmp_path / "trainer", steps=1, batch_size=8, learning_rate=1e-3, seed=0,
                                       model=student.model, config_class=GRPOConfig, num_generations=4,
                                       max_completion_length=8, beta=0.0, disable_dropout=True)
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in DATA["train"]]
    return trainer_class()(model=student.model, reward_funcs=[completion_length], args=args,
                           train_dataset=Dataset.from_list(rows), processing_class=student.tokenizer,
                           teacher_model=teacher.model, divergence=loss, alpha=alpha)


def sampled_batch(trainer):
    """Real on-policy samples: two prompts, four completions each, with rewards and advantages."""
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in DATA["train"][:2] for _ in range(4)]
    torch.manual_seed(0)
    return trainer._generate_and_score_completions(rows)


def gradients(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])


@pytest.mark.parametrize("loss_spec, trl_beta", [({"kind": "gjsd", "beta": 0.5}, 0.5), ({"kind": "reverse_kl"}, 1.0)])
def test_alpha_one_is_gkd_loss_on_the_same_samples(models, tmp_path, loss_spec, trl_beta):
    from trl.experimental.gkd import GKDTrainer

    student, teacher = models
    spec = dict(loss_spec)
    loss = stillroom.build("loss", spec.pop("kind"), **spec)
    trainer = grpo_trainer(student, teacher, 1.0, loss, tmp_path)
    student.model.eval()
    batch = sampled_batch(trainer)
    assert int(batch["completion_mask"].sum()) > 8  # real completions, several tokens long
    ours = trainer.compute_loss(student.model, batch)

    # GKD's own loss (TRL), on logits computed here from the same prompt + completion tokens
    prompt_width = batch["prompt_ids"].size(1)
    width = batch["completion_ids"].size(1)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    window = slice(prompt_width - 1, prompt_width - 1 + width)  # logits at t predict token t + 1
    with torch.no_grad():
        student_logits = student.model(input_ids=ids, attention_mask=mask).logits[:, window]
        teacher_logits = teacher.model(input_ids=ids, attention_mask=mask).logits[:, window]
    labels = batch["completion_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    expected = GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels, beta=trl_beta)
    assert float(expected) > 1e-4
    torch.testing.assert_close(ours.detach(), expected, rtol=1e-5, atol=1e-6)


def test_alpha_zero_gives_the_teacher_no_gradient_and_the_mix_is_linear(models, tmp_path, tiny_model_dir):
    student, teacher = models
    other = stillroom.build("teacher", "hf", model=str(tiny_model_dir), device="cpu")  # another teacher
    trainer = grpo_trainer(student, teacher, 0.5, stillroom.build("loss", "reverse_kl"), tmp_path)
    student.model.eval()
    batch = sampled_batch(trainer)
    assert batch["advantages"].abs().sum() > 0  # the policy-gradient term is not zero

    _, half = gradients(trainer, batch)
    trainer.alpha = 0.0
    _, rl = gradients(trainer, batch)
    trainer.alpha = 1.0
    _, kd = gradients(trainer, batch)
    torch.testing.assert_close(half, 0.5 * rl + 0.5 * kd, rtol=1e-4, atol=1e-7)
    assert kd.abs().sum() > 0 and rl.abs().sum() > 0

    trainer.teacher_model = other.model
    trainer.alpha = 0.0
    _, rl_other = gradients(trainer, batch)
    assert torch.equal(rl_other, rl)  # alpha = 0: the teacher has no influence at all
    trainer.alpha = 1.0
    _, kd_other = gradients(trainer, batch)
    assert not torch.allclose(kd_other, kd)  # ...while at alpha = 1 it does


def test_a_reward_that_prefers_one_answer_moves_the_student_toward_it(stillroom_host, tmp_path):
    """A 4k-parameter character-level student (102-token vocabulary); the reward pays only for the final number
    7. In 20 steps of pure RL (alpha = 0) the share of sampled answers ending in 7 must grow several-fold."""
    student = stillroom.build("student", "quickstart", device="cpu", shape={"layers": 1, "hidden": 16, "heads": 2})
    data = {"train": [{"id": str(i), "prompt": f"Pick {i}", "target": "7"} for i in range(8)]}
    scorer = stillroom.build("evaluator", "exact_match")

    def share_of_sevens(model_student) -> float:
        from stillroom import GenerationRequest

        torch.manual_seed(1)
        requests = [GenerationRequest(messages=[{"role": "user", "content": r["prompt"]}], max_tokens=3,
                                      temperature=1.0, n=16, seed=None) for r in data["train"]]
        answers = [c.text for group in model_student.generate(requests) for c in group]
        rewards = scorer.reward([""] * len(answers), answers, ["7"] * len(answers))
        return sum(rewards) / len(rewards)

    before = share_of_sevens(student)
    method = stillroom.build("method", "gkd_rl", alpha=0.0, reward={"kind": "exact_match"}, num_generations=8,
                             max_new_tokens=3, steps=20, batch_size=16, learning_rate=3e-2)
    job = MethodJob("gkd_rl", method, None, student.fresh(), data, Budget(), 0, RunDirectory(tmp_path / "run"),
                    Context(seed=0, cache=None))
    trained = method.run(job)
    after = share_of_sevens(trained)
    metrics = job.stage_metrics("train")
    assert metrics["optimizer_steps"] == 20 and metrics["reward_calls"] == 20 * 16
    assert metrics["teacher_forward_tokens"] == 0  # alpha = 0: the teacher is never run
    print("share of sevens before/after:", before, after)
    assert after >= max(0.3, 3 * before), (before, after, metrics.get("mean_reward"))


def served_requests(url: str) -> int:
    with urllib.request.urlopen(url + "/stats", timeout=5) as response:
        return int(json.loads(response.read())["requests"])


def test_llm_judge_reward_through_stillroom_serve_is_cached(models, tiny_model_dir, tmp_path):
    student, teacher = models
    with served_model(tiny_model_dir, log=tmp_path / "serve.log", device="cpu", name="tiny") as url:
        def train(run: str) -> dict:
            context = Context(seed=0, cache=CallCache(tmp_path / "calls.sqlite"))
            context.endpoints["judge"] = stillroom.build("endpoint", "openai", context=context, base_url=url + "/v1",
                                                         model="tiny", max_retries=1, concurrency=4)
            method = stillroom.build("method", "gkd_rl", alpha=0.5, num_generations=2, max_new_tokens=4, steps=2,
                                     batch_size=4, learning_rate=1e-3,
                                     reward={"kind": "llm", "endpoint": "judge", "protocol": "single",
                                             "max_tokens": 6, "retries": 0})
            job = MethodJob("gkd_rl", method, teacher, student.fresh(), DATA, Budget(), 0,
                            RunDirectory(tmp_path / run), context)
            method.run(job)
            return job.stage_metrics("train")

        first = train("first")
        asked = served_requests(url)
        second = train("second")  # same seed, same samples, same judge prompts
        assert served_requests(url) == asked  # the server saw no new request
    assert first["reward_calls"] == second["reward_calls"] == 2 * 4
    assert first["judge_calls_paid"] == asked == 8 and first["judge_cache_hits"] == 0
    assert second["judge_calls_paid"] == 0 and second["judge_cache_hits"] == 8
    assert first["reward_tokens"] > 0 and second["reward_tokens"] == first["reward_tokens"]
    assert first["teacher_forward_tokens"] > 0 and first["student_generated_tokens"] > 0


def test_rewards_are_declared_and_checked_when_the_spec_loads(stillroom_host):
    exact = stillroom.build("evaluator", "exact_match")
    rouge = stillroom.build("evaluator", "rouge", rouge_types=["rouge1"])
    assert isinstance(exact, RewardScorer) and isinstance(rouge, RewardScorer)
    assert exact.reward(["q"] * 4, ["so the answer is 12.", "12", "The answer is 1,200.0", "no idea"],
                        ["The answer is 12.", "12", "1200", "3"]) == [1.0, 1.0, 1.0, 0.0]
    assert rouge.reward(["q", "q"], ["a b c d", "x y"], ["a b c d", "a b"]) == [1.0, 0.0]
    with pytest.raises(UserError, match="evaluator kind 'bleu' does not implement RewardScorer"):
        stillroom.build("method", "gkd_rl", reward="bleu")
    with pytest.raises(UserError, match="unknown evaluator or judge kind 'exact_matc'.*did you mean 'exact_match'"):
        stillroom.build("method", "gkd_rl", reward="exact_matc")
    with pytest.raises(UserError, match="alpha = 0.5 trains on a reward"):
        stillroom.build("method", "gkd_rl")
    with pytest.raises(UserError, match="protocol = 'single'"):
        stillroom.build("judge", "llm", protocol="pair_scores", endpoint="x").reward(["q"], ["a"], [None])


ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = ROOT / ".venv" / "bin" / "accelerate"


@pytest.mark.slow
@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate is not installed in .venv")
def test_runs_under_accelerate_with_two_cpu_processes(tmp_path, tiny_model_dir, tiny_teacher_dir):
    from stillroom.testing import free_port

    spec = {
        "name": "gkd-rl-two-ranks", "seed": 0, "output_dir": "runs",
        "evaluate": {"teacher": False, "base": False},
        "teacher": {"kind": "hf", "model": str(tiny_teacher_dir), "device": "cpu"},
        "student": {"kind": "hf", "model": str(tiny_model_dir), "device": "cpu"},
        "data": {"kind": "file", "path": str(ROOT / "examples" / "reliability" / "records.jsonl"), "test_size": 2},
        "budget": {"train_examples": 8, "steps": 2, "batch_size": 8, "learning_rate": 1e-3},
        "methods": [{"kind": "gkd_rl", "alpha": 0.5, "reward": {"kind": "exact_match"}, "num_generations": 4,
                     "max_new_tokens": 6}],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STILLROOM_", "PYTEST_"))}
    env.update(STILLROOM_CACHE_DIR=str(tmp_path / "cache"), STILLROOM_HOME=str(tmp_path / "home"),
               STILLROOM_NO_PROGRESS="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               TRL_EXPERIMENTAL_SILENCE="1", TOKENIZERS_PARALLELISM="false")
    # `--multi_gpu` starts the processes through torchrun; the Trainer's use_cpu picks gloo (see
    # tests/reliability/test_rel_accelerate.py for why not `--cpu`)
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "stillroom.cli", "run", "spec.json"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    runs = list((tmp_path / "runs" / "gkd-rl-two-ranks").iterdir())
    assert len(runs) == 1
    stages = list(runs[0].rglob("methods/gkd_rl/**/train/stage.json"))
    assert len(stages) == 1, stages
    metrics = json.loads(stages[0].read_text())
    # one process group of two: each rank trained on half of every batch, and the counts are summed over both
    assert metrics["world_size"] == 2 and metrics["per_device_batch_size"] == 4
    assert metrics["optimizer_steps"] == 2 and metrics["train_sequences"] == 2 * 8 == metrics["reward_calls"]
    assert metrics["rank0_sequences"] == 2 * 4
    assert metrics["teacher_forward_tokens"] == metrics["train_tokens"] > 0


def test_the_example_spec_validates(stillroom_host):
    from stillroom.specs import load_spec

    spec = load_spec(ROOT / "examples" / "gkd_rl_quickstart.toml")
    kinds = [(m.kind, getattr(m, "alpha", None)) for m in spec.methods]
    assert kinds == [("sft", None), ("gkd", None), ("gkd_rl", 0.5), ("gkd_rl", 1.0)]
    assert spec.methods[2].reward == {"kind": "exact_match"} and spec.methods[2].loss == {"kind": "reverse_kl"}
