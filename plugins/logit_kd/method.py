"""The logit_kd method: word-level knowledge distillation (Hinton et al., 2015; Kim & Rush, 2016) from the
teacher's top-k log-probs, scored once and kept in the teacher-signal store (``stillroom.signals``).

The off-policy baseline every KD paper compares against: the student trains on fixed sequences (the gold
targets, or the teacher's own greedy answers) to match the teacher's next-token distribution at every target
token, with any registered ``topk_*`` loss. The teacher is any teacher that can score prompts: an hf teacher in
process, or an API teacher behind vLLM or ``stillroom serve``. The capture is keyed on the teacher, the
tokenizer, the sequences and k, so every seed, every logit_kd entry and every later run over the same sequences
reads the same capture; ``teacher_forward_tokens`` is counted in the stage that computed it and is 0 elsewhere.
Training runs through the one engine (``stillroom.training``).
"""

from __future__ import annotations

from typing import Any

from stillroom import GenerationRequest, Method, MethodJob, Student, UserError

from stillroom.plugins.logit_kd.config import LogitKDOptions

DEFAULTS = {"train_examples": None, "steps": 200, "batch_size": 16, "learning_rate": 1e-4, "warmup_ratio": 0.0}
DEFAULT_LOSS = {"kind": "topk_forward_kl"}


def stored_topk_loss(loss, student_logits, teacher_indices, teacher_logprobs, labels, num_items_in_batch=None):
    """A top-k loss between a causal student's logits (batch, time, vocab) and stored teacher signals laid out
    on the input positions (batch, time, k): row t is the teacher's distribution of token t given the tokens
    before it (-1 / -inf where there is none). Shifts both against ``labels`` the way TRL does (logits at t
    predict token t+1), so positions labelled -100 and positions without a signal are ignored."""
    return loss(student_logits[:, :-1], (teacher_indices[:, 1:], teacher_logprobs[:, 1:]), labels[:, 1:],
                num_items_in_batch=num_items_in_batch)


def collate_with_signals(examples, pad_id: int) -> dict:
    """A right-padded batch of (ids, labels, weight, indices, logprobs) examples, the signals placed on the
    positions of their target tokens."""
    import numpy as np
    import torch

    width = max(len(e[0]) for e in examples)
    k = examples[0][3].shape[1]
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    indices = np.full((len(examples), width, k), -1, dtype=np.int64)
    logprobs = np.full((len(examples), width, k), -np.inf, dtype=np.float32)
    for row, (ids, labs, _, top_ids, top_values) in enumerate(examples):
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, :len(ids)] = 1
        labels[row, :len(labs)] = torch.tensor(labs, dtype=torch.long)
        targets = np.flatnonzero(np.asarray(labs) != -100)
        indices[row, targets] = top_ids
        logprobs[row, targets] = top_values
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels,
            "weights": torch.tensor([e[2] for e in examples], dtype=torch.float32),
            "teacher_indices": torch.from_numpy(indices), "teacher_logprobs": torch.from_numpy(logprobs)}


def encode_records(student: Student, records: list[dict[str, Any]], max_length: int, where: str):
    """(ids, labels, weight) per record, as the student's own fit would train on them."""
    examples = []
    for index, record in enumerate(records):
        examples.append(student.encode_example(record, max_length=max_length,
                                               location=f"{where}: record {record.get('id', index)!r}"))
    return examples


def check_vocabulary(teacher, student, where: str) -> None:
    """Stored indices are token ids: a white-box teacher must share the student's vocabulary. (An API teacher is
    scored on the student's token ids; its server must use the same tokenizer.)"""
    if teacher.tokenizer is None or student.tokenizer is None:
        return
    if teacher.tokenizer.get_vocab() != student.tokenizer.get_vocab():
        raise UserError("logit_kd compares next-token distributions token by token, so the teacher and the student "
                        "must share a tokenizer; these map tokens to different ids", where)


class LogitKD(Method):
    """Word-level KD: match the teacher's stored top-k next-token log-probs on fixed targets (off-policy)."""

    name = "logit_kd"
    uses_teacher = True
    Config = LogitKDOptions

    def teacher_targets(self, job: MethodJob, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records with the teacher's greedy answers as targets, kept as a stage (the call cache makes a
        rerun free)."""
        def answer() -> list[dict[str, Any]]:
            requests = [GenerationRequest(messages=list(r.get("messages") or [{"role": "user",
                                                                               "content": str(r["prompt"])}]),
                                          max_tokens=self.config.max_new_tokens, temperature=0.0) for r in records]
            completions = job.teacher.generate(requests, description="logit_kd teacher answers")
            return [{**{k: r[k] for k in ("id", "prompt", "messages") if k in r},
                     "target": answers[0].text if answers else "", "gold_target": r.get("target")}
                    for r, answers in zip(records, completions)]

        taught = [r for r in job.jsonl_stage("teacher_answers", answer) if r["target"].strip()]
        if not taught:
            raise UserError("the teacher gave only empty answers; nothing to train on", f"methods[{job.label}]")
        return taught

    def run(self, job: MethodJob) -> Student:
        from stillroom.training import budget_value, ids_digest

        where = f"methods[{job.label}]"
        options = self.config
        teacher = job.teacher
        if teacher is None:
            raise UserError("needs a teacher; add a [teacher] table", where)
        if not teacher.endpoint.can_score:
            raise UserError(f"logit_kd needs a teacher that can score given text (top-k log-probs of every target "
                            f"token): an hf teacher, or an api teacher served by vLLM or `stillroom serve`; teacher "
                            f"kind {teacher.name!r} cannot", where)
        check_vocabulary(teacher, job.student, where)
        plan = {name: budget_value(job, name, getattr(options, name), default) for name, default in DEFAULTS.items()}
        records = job.train_records()
        records = records[:plan["train_examples"]] if plan["train_examples"] else records
        if options.targets == "teacher":
            records = self.teacher_targets(job, records)
        spec = dict(options.loss) if options.loss is not None else dict(DEFAULT_LOSS)
        loss = job.context.build("loss", spec.pop("kind"), **spec)
        examples = encode_records(job.student, records, options.max_length, where)
        sequences = [(ids, [label != -100 for label in labels]) for ids, labels, _ in examples]

        def signals():
            from stillroom.signals import teacher_signals

            return teacher_signals(teacher, job.student.tokenizer, sequences, options.top_k,
                                   describe={"method": "logit_kd", "targets": options.targets})

        def capture(folder) -> dict[str, Any]:
            found, _ = signals()
            summary = found.summary()
            return {**summary, "teacher_forward_tokens": found.teacher_forward_tokens, "signal_key": found.key,
                    "signal_tokens": found.tokens}

        job.stage("teacher_signals", capture)

        def train(student: Student, folder) -> dict[str, Any]:
            metrics = self._train(job, student, plan, examples, signals, loss, folder)
            return {**metrics, **ids_digest(records), "records": len(records),
                    "loss_kind": {**DEFAULT_LOSS, **dict(options.loss or {})}}

        return job.model_stage("train", train)

    def _train(self, job: MethodJob, student: Student, plan: dict[str, Any], examples, signals, loss,
               folder) -> dict[str, Any]:
        import shutil
        from pathlib import Path

        import torch.nn.functional as F

        from stillroom import training

        options = self.config
        # Read back from the store (0 teacher tokens) rather than carried over from the capture stage, so a
        # resumed run that skips that stage trains on the same bytes; if the store was emptied meanwhile the
        # teacher runs again and it is counted here.
        found, stored = signals()
        dataset = [(ids, labels, weight, top_ids, top_values)
                   for (ids, labels, weight), (top_ids, top_values) in zip(examples, stored)]
        settings = training.stage_settings(job, "train")
        pad = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
        ce_weight = options.ce_weight

        def kd_loss(model, inputs, consumption):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            value = stored_topk_loss(loss, logits, inputs["teacher_indices"], inputs["teacher_logprobs"],
                                     inputs["labels"])
            if not ce_weight:
                return value
            shifted = inputs["labels"][:, 1:]
            ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                                 ignore_index=-100)
            return (1 - ce_weight) * value + ce_weight * ce, {"kd_loss": float(value.detach()),
                                                             "ce_loss": float(ce.detach())}

        args = training.training_arguments(
            settings.checkpoint_dir or Path(folder) / "trainer", steps=plan["steps"], batch_size=plan["batch_size"],
            learning_rate=plan["learning_rate"], seed=settings.seed, model=student.model,
            warmup_ratio=plan["warmup_ratio"], weight_decay=options.weight_decay,
            checkpoint_steps=settings.checkpoint_steps, report_to=settings.report_to, location=f"methods[{job.label}]")
        trainer = training.build_trainer(student.model, args=args, train_dataset=dataset,
                                         collate=lambda batch: collate_with_signals(batch, pad), loss=kd_loss)
        trainer.consumption.teacher_forward_tokens += found.teacher_forward_tokens
        metrics = training.run_trainer(trainer, folder=folder, checkpoint_dir=settings.checkpoint_dir,
                                       seed=settings.seed, description=f"{job.label} train")
        shutil.rmtree(Path(folder) / "trainer", ignore_errors=True)
        return {**metrics, "batch_size": plan["batch_size"], "learning_rate": plan["learning_rate"],
                "top_k": options.top_k, "signal_key": found.key}
