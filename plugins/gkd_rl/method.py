"""The gkd_rl method: on-policy distillation mixed with reinforcement learning on a reward, the setting of the
GKD paper's RLAIF experiments (Agarwal et al., 2024, section 4): on the student's own samples, maximise
``(1 - alpha) * E[r(y)] - alpha * D(teacher || student)(y | x)``.

The student samples ``num_generations`` completions per training prompt; a reward component (any evaluator or
judge implementing RewardScorer) scores each one; TRL's GRPO turns the rewards into group-normalised
advantages and a clipped policy-gradient loss; the trainer adds the divergence plugin between the student's
and a white-box teacher's logits on the same completions. One resumable model stage, trained by the core's
engine like every method.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from stillroom import Method, UserError

from stillroom.plugins.gkd_rl.config import GKDRLOptions


class GKDRL(Method):
    """On-policy distillation plus RL on a reward: (1 - alpha) * GRPO on the reward + alpha * divergence to the
    teacher on the student's samples (GKD's RLAIF setting)."""

    name = "gkd_rl"
    uses_teacher = True
    Config = GKDRLOptions

    def run(self, job):
        from stillroom import training

        where = f"methods[{job.label}]"
        options = self.config
        student = job.student
        teacher = None
        if options.alpha > 0:
            teacher, _ = training.causal_models(
                job, where, otherwise="set alpha = 0 for RL on the reward alone",
                encoder_decoder_error="TRL's GRPO trains causal language models only; this student or teacher is "
                "encoder-decoder")
            same, why = training.same_vocabulary(student, teacher)
            if not same:
                raise UserError(f"the divergence compares full next-token distributions, so teacher and student "
                                f"must share one vocabulary, but {why}. Use the on_policy method with "
                                "cross_tokenizer = true for a teacher with another tokenizer", where)
        training.require_chat_tokenizer(student.tokenizer, "student", where)
        records = job.train_records()
        rows = []
        for number, record in enumerate(records, 1):
            if "prompt" not in record:
                raise UserError(f"training record {record.get('id', number)!r} needs a 'prompt'", where)
            reference = record.get("target", record.get("answer"))
            rows.append({"prompt": [{"role": "user", "content": str(record["prompt"])}],
                         "reference": None if reference is None else str(reference)})
        batch_size = training.budget_value(job, "batch_size", options.batch_size, 16)
        if batch_size % options.num_generations:
            raise UserError(f"batch_size {batch_size} (completions per step) must be a multiple of num_generations "
                            f"{options.num_generations}: each prompt's group of samples trains in one step", where)
        reward = self._reward(job) if options.reward is not None else None
        loss = None
        if options.alpha > 0:
            spec = dict(options.loss)
            loss = job.context.build("loss", spec.pop("kind"), **spec)

        def train(student, folder: Path):
            return self._train(job, student, teacher, reward, loss, rows, batch_size, folder)

        return job.model_stage("train", train)

    def _reward(self, job):
        from stillroom.specs import ref_role

        spec = dict(self.config.reward)
        kind = spec.pop("kind")
        return job.context.build(ref_role(kind, ("evaluator", "judge")), kind, **spec)

    def _train(self, job, student, teacher, reward, loss, rows: list[dict[str, Any]], batch_size: int,
               folder: Path) -> dict[str, Any]:
        from datasets import Dataset
        from trl import GRPOConfig

        from stillroom import training
        from stillroom.plugins.gkd_rl.trainer import RewardUsage, no_reward, reward_function, trainer_class

        options = self.config
        where = f"methods[{job.label}]"
        settings = training.stage_settings(job, "train")
        # without a step budget: one pass over the prompts, each sampled num_generations times
        steps = training.budget_value(job, "steps", options.steps,
                                      math.ceil(len(rows) * options.num_generations / batch_size))
        usage = RewardUsage()
        reward_funcs = [reward_function(reward, usage) if reward is not None else no_reward()]
        grpo = dict(num_generations=options.num_generations, max_completion_length=options.max_new_tokens,
                    temperature=options.temperature, loss_type=options.loss_type, epsilon=options.epsilon,
                    beta=0.0,  # GRPO's own KL to a frozen reference: replaced by the divergence to the teacher
                    disable_dropout=True, log_completions=False, use_vllm=False)
        try:
            args = training.training_arguments(
                folder / "trainer", steps=steps, batch_size=batch_size,
                learning_rate=training.budget_value(job, "learning_rate", options.learning_rate, 1e-5),
                seed=settings.seed, model=student.model, config_class=GRPOConfig,
                gradient_accumulation_steps=options.gradient_accumulation_steps,
                warmup_ratio=training.budget_value(job, "warmup_ratio", options.warmup_ratio, 0.0),
                checkpoint_steps=settings.checkpoint_steps, report_to=settings.report_to, location=where, **grpo)
            trainer = trainer_class()(
                model=student.model, reward_funcs=reward_funcs, args=args, train_dataset=Dataset.from_list(rows),
                processing_class=student.tokenizer, teacher_model=teacher.model if teacher is not None else None,
                divergence=loss, alpha=options.alpha)
        except ValueError as exc:
            raise UserError(f"TRL's GRPOTrainer rejected the setup: {exc}", where) from exc
        metrics = training.run_trainer(trainer, folder=folder, checkpoint_dir=settings.checkpoint_dir,
                                       seed=settings.seed, description=f"{job.label} train",
                                       teacher_model=teacher.model if teacher is not None else None)
        history = training.read_log_history(folder)
        rewards = [row["reward"] for row in history if "reward" in row]
        divergences = [row["divergence"] for row in history if "divergence" in row]
        return {
            **metrics,
            **usage.totals(trainer.args.device),
            "trainer": "trl.GRPOTrainer + teacher divergence",
            "alpha": options.alpha,
            "reward": dict(options.reward) if options.reward is not None else None,
            "loss": dict(options.loss),
            "num_generations": options.num_generations,
            "prompts_per_step": batch_size // options.num_generations,
            "first_reward": rewards[0] if rewards else None,
            "final_reward": rewards[-1] if rewards else None,
            "mean_reward": sum(rewards) / len(rewards) if rewards else None,
            "final_divergence": divergences[-1] if divergences else None,
        }

