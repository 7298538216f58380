"""The on_policy method: the student samples completions and learns the teacher's next-token distribution
on them, through TRL's stable DistillationTrainer (shared vocabulary) or, with ``cross_tokenizer``, TRL's
experimental GOLD trainer and its ULD loss (teacher and student tokenizers differ)."""

from __future__ import annotations

import shutil
from pathlib import Path

from stillroom import Method, UserError
from stillroom.training import causal_models, import_trl_experimental, require_chat_tokenizer, same_vocabulary

from stillroom.plugins.gkd import training
from stillroom.plugins.gkd.config import OnPolicyOptions


class OnPolicy(Method):
    """On-policy distillation: TRL's DistillationTrainer, or GOLD with ULD across tokenizers."""

    name = "on_policy"
    uses_teacher = True
    Config = OnPolicyOptions

    def run(self, job):
        where = f"methods[{job.label}]"
        options = self.config
        teacher, student = causal_models(
            job, where, otherwise="distil an API teacher through its answers (seqkd)",
            encoder_decoder_error="TRL's on-policy trainers train causal language models only; this student or "
            "teacher is encoder-decoder")
        same, why = same_vocabulary(student, teacher)
        if not same and not options.cross_tokenizer:
            raise UserError(f"teacher and student do not share a vocabulary ({why}); set cross_tokenizer = true "
                            "to distil across tokenizers with TRL's GOLD trainer (ULD loss)", where)
        require_chat_tokenizer(student.tokenizer, "student", where)
        if options.cross_tokenizer:
            require_chat_tokenizer(teacher.tokenizer, "teacher", where)
        budget = training.plan(job, options, where)
        train = self._train_gold if options.cross_tokenizer else self._train_distillation
        return job.model_stage("train", lambda student, folder: train(job, student, teacher, budget, folder))

    def _train_distillation(self, job, student, teacher, budget: training.Plan, folder: Path) -> dict:
        from datasets import Dataset
        from trl import DistillationConfig, DistillationTrainer

        from stillroom.training import counting, stage_settings

        options = self.config
        stage = stage_settings(job, "train")
        where = f"methods[{job.label}]"
        output_dir = folder / "trainer"
        tokenizer = student.tokenizer
        padding_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # DistillationTrainer generates from left-padded prompts
        try:
            try:
                args = training.trainer_config(
                    DistillationConfig, job, options, budget, stage.checkpoint_dir or output_dir, student.model,
                    stage, beta=options.beta, temperature=options.temperature,
                    max_completion_length=options.max_completion_length)
                trainer = counting(DistillationTrainer, teacher_sees_inputs=True)(
                    model=student.model, teacher_model=teacher.model, args=args, processing_class=tokenizer,
                    train_dataset=Dataset.from_list(training.prompt_records(budget.records, where)))
            except ValueError as exc:
                raise UserError(f"TRL's DistillationTrainer rejected the setup: {exc}", where) from exc
            return self._finish(trainer, folder, output_dir, budget, "trl.DistillationTrainer", stage, teacher)
        finally:
            tokenizer.padding_side = padding_side

    def _train_gold(self, job, student, teacher, budget: training.Plan, folder: Path) -> dict:
        from datasets import Dataset

        from stillroom.training import counting, stage_settings

        gold = import_trl_experimental("trl.experimental.gold")
        GOLDConfig, GOLDTrainer = gold.GOLDConfig, gold.GOLDTrainer

        options = self.config
        stage = stage_settings(job, "train")
        where = f"methods[{job.label}]"
        output_dir = folder / "trainer"
        # GOLD loads the teacher tokenizer by name; a saved copy works for any teacher, local or not.
        teacher_tokenizer = folder / "teacher_tokenizer"
        teacher.tokenizer.save_pretrained(teacher_tokenizer)
        try:
            args = training.trainer_config(
                GOLDConfig, job, options, budget, stage.checkpoint_dir or output_dir, student.model, stage,
                use_uld_loss=True,
                teacher_tokenizer_name_or_path=str(teacher_tokenizer),
                lmbda=options.lmbda,
                beta=options.beta,
                seq_kd=options.seq_kd,
                temperature=options.temperature,
                max_completion_length=options.max_completion_length,
                max_length=options.max_length,
                **options.uld_options,
            )
            trainer = counting(GOLDTrainer, teacher_sees_inputs=True)(
                model=student.model, teacher_model=teacher.model, args=args, processing_class=student.tokenizer,
                train_dataset=Dataset.from_list(training.chat_records(budget.records, where)))
        except (TypeError, ValueError) as exc:
            raise UserError(f"TRL's GOLD trainer rejected the setup: {exc}", where) from exc
        metrics = self._finish(trainer, folder, output_dir, budget, "trl.experimental.gold.GOLDTrainer", stage, teacher)
        shutil.rmtree(teacher_tokenizer, ignore_errors=True)
        return {**metrics, "lmbda": options.lmbda, "seq_kd": options.seq_kd, "max_length": options.max_length,
                "uld_options": dict(options.uld_options)}

    def _finish(self, trainer, folder: Path, output_dir: Path, budget: training.Plan, name: str, stage,
                teacher) -> dict:
        options = self.config
        return training.train(trainer, trainer.model, folder, output_dir, budget, name, stage=stage,
                              teacher_model=teacher.model,
                              cross_tokenizer=options.cross_tokenizer, beta=options.beta,
                              temperature=options.temperature, max_completion_length=options.max_completion_length)
