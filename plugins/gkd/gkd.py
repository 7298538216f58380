"""The gkd method: generalized knowledge distillation through TRL's experimental GKDTrainer.

The trainer is TRL's own; the subclass only counts generations (so a run reports how often it went
on-policy) and, when the spec asks for one, swaps TRL's loss for a registered loss plugin. Training is one
resumable model stage; under ``accelerate launch`` the Trainer distributes itself as usual.
"""

from __future__ import annotations

import functools
from pathlib import Path

from stillroom import Method, UserError
from stillroom.training import causal_models, import_trl_experimental, require_chat_tokenizer, same_vocabulary

from stillroom.plugins.gkd import training
from stillroom.plugins.gkd.config import GKDOptions


@functools.lru_cache(maxsize=None)
def counting_trainer_class():
    """GKDTrainer plus the engine's consumption counting, generation counters and an optional replacement loss
    (built lazily: TRL is heavy)."""
    from stillroom.training import ConsumptionMixin

    GKDTrainer = import_trl_experimental("trl.experimental.gkd").GKDTrainer

    class CountingGKDTrainer(ConsumptionMixin, GKDTrainer):
        """TRL's GKDTrainer that counts what it consumes (the teacher's forward tokens, the tokens the student
        or teacher generate) and its generations, and can use a stillroom loss."""

        def __init__(self, *args, distillation_loss=None, **kwargs):
            self.student_generations = 0
            self.teacher_generations = 0
            self.distillation_loss = distillation_loss
            self.signal_index = None  # stillroom.signals.SignalIndex of the captured off-policy rows, if any
            super().__init__(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            stored = None
            if self.signal_index is not None and model.training:
                stored = self.signal_index.batch(inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
            if stored is not None:
                # an off-policy batch whose teacher top-k was captured once (shared by seeds and runs): the
                # teacher does not run; a generated (on-policy or seq_kd) batch is never in the index
                self.count_batch(inputs)
                outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
                indices, logprobs = stored
                loss = self.distillation_loss(outputs.logits[:, :-1], (indices[:, 1:], logprobs[:, 1:]),
                                              inputs["labels"][:, 1:], num_items_in_batch=num_items_in_batch)
                return (loss, outputs) if return_outputs else loss
            # GKDTrainer runs the teacher forward over the same sequences the student trains on
            mask = inputs.get("attention_mask")
            if model.training:
                self.consumption.teacher_forward_tokens += int(mask.sum()) if mask is not None \
                    else int(inputs["input_ids"].numel())
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        def generate_on_policy_outputs(self, model, inputs, generation_config):
            teacher = self.teacher_model
            by_teacher = model is teacher or model is self.accelerator.unwrap_model(teacher)
            outputs = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
            generated = int((outputs[2] != -100).sum())
            if by_teacher:
                self.teacher_generations += 1
                self.consumption.teacher_forward_tokens += generated
            else:
                self.student_generations += 1
                self.consumption.student_generated_tokens += generated
            return outputs

        def generalized_jsd_loss(self, student_logits, teacher_logits, labels=None, beta=0.5, temperature=1.0,
                                 reduction="batchmean", num_items_in_batch=None):
            if self.distillation_loss is None:
                return GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels, beta=beta,
                                                       temperature=temperature, reduction=reduction,
                                                       num_items_in_batch=num_items_in_batch)
            return self.distillation_loss(student_logits, teacher_logits, labels,
                                          num_items_in_batch=num_items_in_batch)

    return CountingGKDTrainer


class GKD(Method):
    """On-policy generalized knowledge distillation (Agarwal et al., 2024) with TRL's GKDTrainer."""

    name = "gkd"
    uses_teacher = True
    Config = GKDOptions

    def run(self, job):
        where = f"methods[{job.label}]"
        options = self.config
        teacher, student = causal_models(
            job, where, otherwise="distil an API teacher through its top-k log-probs (a topk_* loss) or its answers "
            "(seqkd)", encoder_decoder_error="GKDTrainer trains causal language models only; this student or teacher "
            "is encoder-decoder (use seqkd or a word-level KD method)")
        same, why = same_vocabulary(student, teacher)
        if not same:
            raise UserError(f"GKD compares full next-token distributions, so teacher and student must share a "
                            f"vocabulary, but {why}. Use the on_policy method with cross_tokenizer = true "
                            "(TRL's GOLD trainer) for teachers with another tokenizer", where)
        require_chat_tokenizer(student.tokenizer, "student", where)
        budget = training.plan(job, options, where)
        loss = None
        if options.loss is not None:
            spec = dict(options.loss)
            loss = job.context.build("loss", spec.pop("kind"), **spec)

        def train(student, folder: Path):
            return self._train(job, student, teacher, budget, loss, folder)

        return job.model_stage("train", train)

    def _train(self, job, student, teacher, budget: training.Plan, loss, folder: Path) -> dict:
        from datasets import Dataset

        from stillroom.training import stage_settings

        GKDConfig = import_trl_experimental("trl.experimental.gkd").GKDConfig

        options = self.config
        output_dir = folder / "trainer"
        where = f"methods[{job.label}]"
        rows = training.encoded_chat_records(student, budget.records, options.max_length, where)
        dataset = Dataset.from_list(rows)
        settings = dict(lmbda=options.lmbda, beta=options.beta, temperature=options.temperature,
                        max_new_tokens=options.max_new_tokens, seq_kd=options.seq_kd, max_length=options.max_length)
        stage = stage_settings(job, "train")
        try:
            args = training.trainer_config(GKDConfig, job, options, budget, stage.checkpoint_dir or output_dir,
                                           student.model, stage, **settings)
            trainer = counting_trainer_class()(
                model=student.model, teacher_model=teacher.model, args=args, train_dataset=dataset,
                processing_class=student.tokenizer, distillation_loss=loss)
        except ValueError as exc:
            raise UserError(f"TRL's GKDTrainer rejected the setup: {exc}", where) from exc
        signals = {}
        if loss is not None and loss.name.startswith("topk_"):
            signals = self._stored_signals(trainer, teacher, student, loss)
        metrics = training.train(trainer, student.model, folder, output_dir, budget, "trl.experimental.gkd.GKDTrainer",
                                 stage=stage, teacher_model=teacher.model, **settings,
                                 loss=dict(options.loss) if options.loss is not None else "trl.generalized_jsd_loss")
        if trainer.signal_index is not None:
            signals.update(stored_signal_batches=trainer.signal_index.hits,
                           teacher_forward_batches=trainer.signal_index.misses)
        return {
            **metrics,
            # one per micro-batch that was replaced by generated completions
            "student_generations": trainer.student_generations,
            "teacher_generations": trainer.teacher_generations,
            **signals,
        }

    @staticmethod
    def _stored_signals(trainer, teacher, student, loss) -> dict:
        """With a top-k loss, off-policy batches read the teacher's top-k from the signal store
        (``stillroom.signals``) instead of running the teacher: the training rows, exactly as the trainer's
        collator lays them out, are captured once (or found captured by an earlier seed or run). The rows are the
        student's own encoding (``training.encoded_chat_records``), so this is the capture logit_kd and
        joint_teaching read over the same records and k: the teacher scores those tokens once for all three."""
        from stillroom.signals import SignalIndex, teacher_signals

        sequences = []
        for row in trainer.train_dataset:
            batch = trainer.data_collator([row])
            real = batch["attention_mask"][0].bool()
            ids = batch["input_ids"][0][real].tolist()
            sequences.append((ids, (batch["labels"][0][real] != -100).tolist()))
        k = loss.config.k or 20  # what the top-k losses take from full teacher logits when k is unset
        captured, signals = teacher_signals(teacher, student.tokenizer, sequences, k,
                                            describe={"method": "gkd", "collator": type(trainer.data_collator).__name__})
        trainer.signal_index = SignalIndex(sequences, signals)
        trainer.consumption.teacher_forward_tokens += captured.teacher_forward_tokens
        return {"signal_key": captured.key, "signal_capture_tokens": captured.teacher_forward_tokens, "signal_top_k": k}
