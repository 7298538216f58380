"""The joint_teaching objective, trained through the engine (``stillroom.training``): per step, pick the
batch's targets (a teacher pseudo-target of this epoch's turn, or ones the student samples now), read the
teacher's distribution at every target position (full logits of a white-box teacher, or a sparse top-k mapped
onto the student's vocabulary) and return the word-level loss; the engine takes the optimizer step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stillroom import UserError
from stillroom.training import same_vocabulary

from stillroom.plugins.joint_teaching import schedule as sched
from stillroom.plugins.joint_teaching.alignment import SparseTarget, Vocabulary, sparse_target
from stillroom.plugins.joint_teaching.scoring import (encode_prompt, encode_target, fit_length, is_encoder_decoder,
                                                       noisy, target_logits)
from stillroom.plugins.joint_teaching.targets import student_targets

# A sparse target usable by a dense loss: what each dense kind becomes when the teacher gives only a top-k.
SPARSE_EQUIVALENT = {"reverse_kl": "topk_reverse_kl", "gjsd": "topk_gjsd"}
DENSIFIABLE = {"forward_kl", "tvd", "ce"}


@dataclass
class Batch:
    """What one loss evaluation needs, built for the current student and teacher."""

    student_prompts: list[list[int]]
    student_targets: list[list[int]]
    texts: list[str]
    finished: list[bool]
    entries: list[dict[str, Any] | None]  # the stored teacher pseudo-target (None for student ones)
    keys: list[tuple[int, int] | None]    # (example, pool index) of stored targets, for memoised sparse targets
    prompts: list[str]


class Distiller:
    """Computes the word-level loss of a batch of (prompt, target) pairs against the teacher."""

    def __init__(self, *, student, teacher, config, access: str, loss, sparse_loss, where: str):
        self.student = student
        self.teacher = teacher
        self.config = config
        self.access = access  # "logits" | "top_logprobs" | "none" (loss ce: no teacher needed)
        self.loss = loss
        self.sparse_loss = sparse_loss
        self.where = where
        self.student_vocab: Vocabulary | None = None
        self.teacher_vocab: Vocabulary | None = None
        self.same_vocabulary = False
        self.sparse_memo: dict[tuple[int, int], SparseTarget] = {}
        self.matched = 0
        self.positions = 0
        self.teacher_forward_tokens = 0
        self.counting = False
        # (example, pool index) -> the teacher's stored top-k over that (fitted) stored target, when the loss is a
        # top-k one and the teacher's signal was captured (stillroom.signals): then the teacher does not run
        self.stored: dict[tuple[int, int], tuple[Any, Any]] = {}
        self.stored_batches = 0
        self.scale = float(loss.temperature) ** 2 if config.temperature_squared else 1.0
        if access == "logits":
            # the dense loss compares logits up to the narrower width, so padding rows may differ
            self.same_vocabulary, _ = same_vocabulary(student, teacher, padded_rows=True)
            if not self.same_vocabulary:
                self.student_vocab = Vocabulary.of(student.tokenizer)
                self.teacher_vocab = Vocabulary.of(teacher.tokenizer)
        elif access == "top_logprobs":
            self.student_vocab = Vocabulary.of(student.tokenizer)

    # -- teacher distributions ------------------------------------------------------------------------

    def _teacher_dense(self, prompts: list[str], targets: list[list[int]]):
        import torch

        teacher = self.teacher
        encoder_decoder = is_encoder_decoder(teacher.model)
        teacher_prompts = [encode_prompt(teacher.tokenizer, p, is_encoder_decoder=encoder_decoder,
                                         system_prompt=None) for p in prompts]
        longest = max(len(p) for p in teacher_prompts) + max(len(t) for t in targets) + 1
        if self.counting:
            self.teacher_forward_tokens += sum(min(len(p) + len(t), longest) for p, t in zip(teacher_prompts, targets))
        with torch.no_grad(), noisy(teacher.model, self.config.teacher_dropout):
            logits, _ = target_logits(teacher.model, teacher.tokenizer, teacher_prompts, targets, max_length=longest)
        return logits

    def _teacher_sparse_white_box(self, prompts: list[str], texts: list[str], finished: list[bool],
                                  student_targets: list[list[int]]) -> list[SparseTarget]:
        import torch

        teacher = self.teacher
        targets = [encode_target(teacher.tokenizer, text, finished=done) for text, done in zip(texts, finished)]
        logits = self._teacher_dense(prompts, targets)
        k = min(self.config.teacher_top_k, logits.shape[-1])
        values, indices = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
        values, indices = values.tolist(), indices.tolist()
        texts_of = self.teacher_vocab.texts
        out = []
        for row, target in enumerate(targets):
            tokens = [texts_of[i] if i < len(texts_of) else "" for i in target]
            top = [[(texts_of[i] if i < len(texts_of) else "", v) for i, v in zip(indices[row][t], values[row][t])]
                   for t in range(len(target))]
            out.append(sparse_target(tokens, top, student_targets[row], self.student_vocab))
        return out

    def _teacher_sparse_api(self, batch: Batch) -> list[SparseTarget]:
        out = []
        for entry, key, target in zip(batch.entries, batch.keys, batch.student_targets):
            if key is not None and key in self.sparse_memo:
                out.append(self.sparse_memo[key])
                continue
            tokens = (entry or {}).get("tokens") or []
            teacher_tokens = [t[0] for t in tokens]
            teacher_top = [[(alt, lp) for alt, lp in t[2]] for t in tokens]
            sparse = sparse_target(teacher_tokens, teacher_top, target, self.student_vocab)
            if key is not None:
                self.sparse_memo[key] = sparse
            out.append(sparse)
        return out

    def _stored_topk(self, batch: Batch, targets: list[list[int]], time_steps: int, device):
        """``(indices, logprobs)`` (batch, time, k) of the stored targets in ``batch`` from the capture, or None
        (a student pseudo-target, or no capture)."""
        import numpy as np
        import torch

        if not self.stored or any(key is None or key not in self.stored for key in batch.keys):
            return None
        found = [self.stored[key] for key in batch.keys]
        k = max(top_ids.shape[1] for top_ids, _ in found)
        indices = np.full((len(found), time_steps, k), -1, dtype=np.int64)
        values = np.full((len(found), time_steps, k), -np.inf, dtype=np.float32)
        for row, ((top_ids, top_values), target) in enumerate(zip(found, targets)):
            length = min(len(target), time_steps, top_ids.shape[0])
            indices[row, :length, :top_ids.shape[1]] = top_ids[:length]
            values[row, :length, :top_values.shape[1]] = top_values[:length]
        return torch.from_numpy(indices).to(device), torch.from_numpy(values).to(device)

    def _teacher_sparse_scored(self, prompts: list[list[int]], targets: list[list[int]]) -> list[SparseTarget]:
        """The teacher's top-k at every position of student pseudo-targets, by prompt scoring
        (``Teacher.score_targets``): each (prompt, target) is sent as the student's token ids, so the teacher
        must share the student's tokenizer, and its top-k is already in the student's vocabulary."""
        import math

        if is_encoder_decoder(self.student.model):
            raise UserError("scoring student pseudo-targets through the teacher's endpoint needs a causal student "
                            "(prompt and target form one sequence)", self.where)
        sequences = [list(p) + list(t) for p, t in zip(prompts, targets)]
        scored = self.teacher.score_targets(sequences, self.config.top_logprobs)
        if self.counting:
            self.teacher_forward_tokens += sum(len(s) for s in sequences)
        out = []
        for prompt, target, (indices, values) in zip(prompts, targets, scored):
            ids, logprobs, matched = [], [], []
            for t, token in enumerate(target):
                row = len(prompt) + t
                pairs = [(int(i), float(v)) for i, v in zip(indices[row], values[row]) if i >= 0 and math.isfinite(v)]
                ids.append([i for i, _ in pairs] or [int(token)])
                logprobs.append([v for _, v in pairs] or [0.0])
                matched.append(bool(pairs))
            out.append(SparseTarget(ids, logprobs, matched))
        return out

    # -- the loss ----------------------------------------------------------------------------------------

    def __call__(self, batch: Batch, *, track: bool = True, forward=None):
        """The scaled loss of ``batch`` (with gradients into the student, run through ``forward``: the
        engine's wrapper of the student model; default the model itself)."""
        import torch

        self.counting = track

        student = self.student
        pairs = [fit_length(p, t, self.config.max_length, is_encoder_decoder(student.model))
                 for p, t in zip(batch.student_prompts, batch.student_targets)]
        prompts = [p for p, _ in pairs]
        targets = [t if t else [student.tokenizer.eos_token_id] for _, t in pairs]
        logits, mask = target_logits(student.model, student.tokenizer, prompts, targets,
                                     max_length=self.config.max_length, forward=forward)
        batch_size, time_steps = mask.shape
        labels = torch.full((batch_size, time_steps), -100, dtype=torch.long, device=logits.device)
        for row, target in enumerate(targets):
            labels[row, :len(target)] = torch.tensor(target, dtype=torch.long, device=logits.device)
        labels = labels.masked_fill(~mask, -100)

        if self.access == "none":
            return self.loss(logits, None, labels) * self.scale
        if self.access == "logits" and self.same_vocabulary:
            stored = self._stored_topk(batch, targets, time_steps, logits.device)
            if stored is not None:
                if track:
                    self.matched += int(mask.sum())
                    self.positions += int(mask.sum())
                    self.stored_batches += 1
                return self.loss(logits, stored, labels) * self.scale
            teacher_logits = self._teacher_dense(batch.prompts, targets).to(logits.device)
            width = min(teacher_logits.shape[-1], logits.shape[-1])  # padded vocabularies (T5) may differ
            if track:
                self.matched += int(mask.sum())
                self.positions += int(mask.sum())
            return self.loss(logits[..., :width], teacher_logits[..., :width].to(logits.dtype), labels) * self.scale
        if self.access == "logits":
            sparse = self._teacher_sparse_white_box(batch.prompts, batch.texts, batch.finished, targets)
        elif all(entry is None for entry in batch.entries):  # student pseudo-targets: the API teacher scores them
            sparse = self._teacher_sparse_scored(prompts, targets)
        else:
            sparse = self._teacher_sparse_api(batch)
        return self._sparse_loss(logits, labels, targets, sparse, track) * self.scale

    def _sparse_loss(self, logits, labels, targets, sparse: list[SparseTarget], track: bool):
        import torch

        batch_size, time_steps, vocab = logits.shape
        width = max(s.width for s in sparse)
        indices = torch.full((batch_size, time_steps, width), -1, dtype=torch.long)
        values = torch.full((batch_size, time_steps, width), float("-inf"))
        for row, (target, item) in enumerate(zip(targets, sparse)):
            for t in range(min(len(target), len(item.ids), time_steps)):
                ids = item.ids[t]
                indices[row, t, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                values[row, t, :len(ids)] = torch.tensor(item.logprobs[t])
                if track and labels[row, t] != -100:
                    self.positions += 1
                    self.matched += int(item.matched[t])
        indices, values = indices.to(logits.device), values.to(logits.device)
        if self.sparse_loss is not None:
            return self.sparse_loss(logits, (indices, values), labels)
        dense = torch.full((batch_size, time_steps, vocab), float("-inf"), device=logits.device)
        dense.scatter_(-1, indices.clamp_min(0), values.masked_fill(indices < 0, float("-inf")))
        return self.loss(logits, dense, labels)


def build_losses(context, config, access: str, where: str):
    """(loss, sparse loss or None): the configured loss, and what reads sparse teacher targets when the
    teacher gives them (None = densify them for the configured loss)."""
    kind, options = config.loss_kind, config.loss_options()
    loss = context.build("loss", kind, **options)
    if config.sparse_loss is not None:
        spec = dict(config.sparse_loss)
        return loss, context.build("loss", spec.pop("kind"), **spec)
    if kind.startswith("topk_"):
        return loss, loss
    if kind in DENSIFIABLE or access == "none":
        return loss, None
    if kind in SPARSE_EQUIVALENT:
        options = dict(options)
        options.setdefault("tail", "bucket" if float(options.get("temperature", 1.0)) == 1.0 else "renormalize")
        return loss, context.build("loss", SPARSE_EQUIVALENT[kind], **options)
    return loss, None


def needs_sparse(distiller: Distiller) -> bool:
    return distiller.access == "top_logprobs" or (distiller.access == "logits" and not distiller.same_vocabulary)


def train(*, student, teacher, config, plan, records: list[dict[str, Any]], pools: list[list[dict[str, Any]]],
          access: str, loss, sparse_loss, seed: int, where: str, folder=None, checkpoint_dir=None,
          checkpoint_steps: int | None = None, report_to="none", description: str = "joint_teaching train"
          ) -> dict[str, Any]:
    """Train ``student.model`` in place through the training engine; returns the stage metrics (and
    ``losses``, one per logged step).

    The method's batch policy is its own (each epoch a fresh permutation, the (e mod K)-th pseudo-target in
    epoch e, student steps on a schedule), so the engine gets the rows step after step (``ordered``): under
    ``accelerate launch`` every process takes its share of each step's rows."""
    import tempfile
    from pathlib import Path

    import torch

    from stillroom import training

    distiller = Distiller(student=student, teacher=teacher, config=config, access=access, loss=loss,
                          sparse_loss=sparse_loss, where=where)
    if needs_sparse(distiller) and sparse_loss is None and config.loss_kind not in DENSIFIABLE:
        raise UserError(f"loss {config.loss_kind!r} has no sparse form for a top-k teacher; set sparse_loss "
                        "(e.g. 'topk_forward_kl')", f"{where}.sparse_loss")
    model, tokenizer = student.model, student.tokenizer
    encoder_decoder = is_encoder_decoder(model)
    prompt_ids = [encode_prompt(tokenizer, str(r["prompt"]), is_encoder_decoder=encoder_decoder) for r in records]
    target_memo: dict[tuple[int, int], list[int]] = {}

    def stored_target(example: int, index: int) -> list[int]:
        key = (example, index)
        if key not in target_memo:
            entry = pools[example][index]
            target_memo[key] = encode_target(tokenizer, entry["text"], finished=entry.get("finished", True))
        return target_memo[key]

    def stored_batch(picks: list[tuple[int, int]]) -> Batch:
        entries = [pools[e][i] for e, i in picks]
        return Batch(student_prompts=[prompt_ids[e] for e, _ in picks],
                     student_targets=[stored_target(e, i) for e, i in picks],
                     texts=[x["text"] for x in entries], finished=[x.get("finished", True) for x in entries],
                     entries=entries, keys=list(picks), prompts=[str(records[e]["prompt"]) for e, _ in picks])

    def measure() -> float | None:
        count = min(config.eval_examples, len(records))
        if not count:
            return None
        total, weight = 0.0, 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), training.small_model_threads(model, teacher.model):
                for begin in range(0, count, plan.batch_size):
                    picks = [(e, 0) for e in range(begin, min(count, begin + plan.batch_size))]
                    value = distiller(stored_batch(picks), track=False)
                    total += float(value) * len(picks)
                    weight += len(picks)
        finally:
            model.train(was_training)
        return total / max(weight, 1)

    steps = plan.steps
    student_plan = sched.student_steps(steps, config.alpha, config.schedule, seed)
    batch_plan = sched.batches(len(records), steps, plan.batch_size, seed)
    per_step = len(batch_plan[0]) if batch_plan else 0
    rows = [(step, pick) for step, picks in enumerate(batch_plan) for pick in picks]
    # validated by the method: an endpoint that cannot score chose 'teacher_targets'
    fallback = access == "top_logprobs" and config.alpha > 0 and not teacher.endpoint.can_score
    student_step_set: set[int] = set()
    fallback_step_set: set[int] = set()
    rotation: dict[int, set[int]] = {}

    def step_loss(forward, inputs, consumption):
        step, picks = inputs["step"], inputs["picks"]
        if student_plan[step] and fallback:
            fallback_step_set.add(step)
        if student_plan[step] and not fallback:
            student_step_set.add(step)
            prompts = [str(records[p.example]["prompt"]) for p in picks]
            generated = student_targets(student, prompts, config, seed=seed * 1_000_003 + step)
            model.train()
            targets = [encode_target(tokenizer, g["text"], finished=g["finished"]) for g in generated]
            consumption.student_generated_tokens += sum(len(t) for t in targets)
            batch = Batch(student_prompts=[prompt_ids[p.example] for p in picks], student_targets=targets,
                          texts=[g["text"] for g in generated], finished=[g["finished"] for g in generated],
                          entries=[None] * len(picks), keys=[None] * len(picks), prompts=prompts)
        else:
            chosen = [(p.example, sched.target_index(p.epoch, len(pools[p.example]))) for p in picks]
            for (example, index), pick in zip(chosen, picks):
                rotation.setdefault(pick.epoch, set()).add(index)
            batch = stored_batch(chosen)
        consumption.train_sequences += len(picks)
        fitted = [fit_length(p, t, config.max_length, encoder_decoder)
                  for p, t in zip(batch.student_prompts, batch.student_targets)]
        consumption.train_tokens += sum(len(p) + len(t) for p, t in fitted)
        before = distiller.teacher_forward_tokens
        value = distiller(batch, forward=forward)
        consumption.teacher_forward_tokens += distiller.teacher_forward_tokens - before
        return value

    def collate(items):
        return {"step": items[0][0], "picks": [pick for _, pick in items]}

    with tempfile.TemporaryDirectory(prefix="stillroom-jt-") as scratch:
        work = Path(folder) if folder is not None else Path(scratch)
        # first: the loss measured before training reads the same stored signal as training and after
        captured = capture_stored_targets(distiller, teacher, config, loss, pools, prompt_ids, stored_target)
        before = measure()
        args = training.training_arguments(
            checkpoint_dir or Path(scratch) / "trainer", steps=steps, batch_size=per_step,
            learning_rate=plan.learning_rate, seed=seed, model=model, warmup_ratio=plan.warmup_ratio,
            weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
            checkpoint_steps=checkpoint_steps if checkpoint_dir else None, report_to=report_to, location=where)
        trainer = training.build_trainer(model, args=args, train_dataset=rows, collate=collate, loss=step_loss,
                                         ordered=True)
        if captured is not None:
            trainer.consumption.teacher_forward_tokens += captured.teacher_forward_tokens
        metrics = training.run_trainer(trainer, folder=work, checkpoint_dir=checkpoint_dir, seed=seed,
                                       description=description,
                                       teacher_model=teacher.model if access == "logits" else None)
        losses = [float(row["loss"]) for row in training.read_log_history(work)]
        after = measure()
    pool_sizes = [len(p) for p in pools]
    tail = losses[-10:]
    return {
        **metrics,
        "loss": sum(tail) / len(tail) if tail else None,
        "kd_loss_before": before, "kd_loss_after": after, "steps": metrics["optimizer_steps"],
        "batch_size": plan.batch_size, "learning_rate": plan.learning_rate, "examples": len(records),
        "epochs": (batch_plan[-1][-1].epoch + 1) if batch_plan and batch_plan[-1] else 0,
        "student_steps": len(student_step_set), "fallback_steps": len(fallback_step_set),
        "teacher_access": access, "same_vocabulary": distiller.same_vocabulary if access == "logits" else None,
        "matched_positions": (distiller.matched / distiller.positions) if distiller.positions else None,
        "pool_size": (min(pool_sizes), max(pool_sizes)) if pool_sizes else None,
        "rotation": {str(e): sorted(v) for e, v in sorted(rotation.items())},
        **({"signal_key": captured.key, "signal_capture_tokens": captured.teacher_forward_tokens,
            "stored_signal_batches": distiller.stored_batches} if captured is not None else {}),
        "losses": losses,
    }


def capture_stored_targets(distiller: Distiller, teacher, config, loss, pools, prompt_ids, stored_target):
    """With a top-k loss and a white-box teacher that shares the student's tokenizer (vocabulary and chat
    template), the teacher's top-k over every stored target (teacher pseudo-targets and gold) is captured once
    in the signal store (``stillroom.signals``) and read from there on every epoch, seed and run; returns the
    capture, or None when that does not apply (then the teacher runs on each batch as before)."""
    from stillroom.signals import teacher_signals, tokenizer_fingerprint

    student = distiller.student
    if not (distiller.access == "logits" and distiller.same_vocabulary and config.loss_kind.startswith("topk_")
            and not config.teacher_dropout and not is_encoder_decoder(student.model)
            and tokenizer_fingerprint(teacher.tokenizer) == tokenizer_fingerprint(student.tokenizer)):
        return None
    eos = student.tokenizer.eos_token_id
    keys, sequences = [], []
    for example, pool in enumerate(pools):
        for index in range(len(pool)):
            # fitted exactly as the Distiller fits a batch, so stored rows line up with its target positions
            prompt, target = fit_length(prompt_ids[example], stored_target(example, index), config.max_length, False)
            target = target or [eos]
            keys.append((example, index))
            sequences.append((list(prompt) + list(target), [False] * len(prompt) + [True] * len(target)))
    k = loss.config.k or 20  # what the top-k losses take from full teacher logits when k is unset
    captured, signals = teacher_signals(teacher, student.tokenizer, sequences, k,
                                        describe={"method": "joint_teaching"})
    distiller.stored = dict(zip(keys, signals))
    return captured
