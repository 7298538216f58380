"""The hf student: a transformers model (causal or encoder-decoder, optionally with a LoRA adapter) that
methods train with ``fit`` or directly through ``.model``, and that generates through the call cache."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from stillroom import Completion, GenerationRequest, Student, UserError

from stillroom.plugins.hf.config import StudentOptions
from stillroom.plugins.hf.endpoint import HFEndpoint
from stillroom.plugins.hf.loading import (encode_prompt, load_config, load_model, load_tokenizer, resolve_device,
                                          resolve_dtype, small_model_threads)


class HFStudent(Student):
    """A trainable transformers model and tokenizer: supervised fine-tuning, save/load, cached generation."""

    name = "hf"

    class Config(StudentOptions):
        pass

    def __init__(self, config=None, context=None, *, weights: str | Path | None = None):
        """Build from ``config``; ``weights`` names a saved student folder to load instead of ``config.model``
        (what ``load`` uses; the config's init and LoRA options still apply)."""
        super().__init__(config, context)
        options = self.config
        self._weights = str(weights) if weights is not None else None
        location = "student.model" if weights is None else "student.load"
        source, model_config = load_config(self._weights or options.model,
                                           trust_remote_code=options.trust_remote_code, location=location)
        self.device = resolve_device(options.device)
        random_init = options.init == "random" and self._weights is None
        model = load_model(source, model_config, dtype=resolve_dtype(options.dtype, self.device, training=True),
                           device=self.device, trust_remote_code=options.trust_remote_code,
                           random_init=random_init, seed=options.init_seed, location=location)
        self.tokenizer = load_tokenizer(source, trust_remote_code=options.trust_remote_code, location=location)
        self.is_encoder_decoder = bool(getattr(model_config, "is_encoder_decoder", False))
        self.model = self._with_lora(model) if options.lora is not None else model
        # `path` is where these exact weights live on disk: None for fresh random weights and after `fit`
        # changed them, until they are saved and loaded again.
        self.path: str | None = None if random_init else source
        self._endpoint = HFEndpoint(
            HFEndpoint.Config(model=source, dtype=options.dtype, device=options.device,
                              batch_size=options.batch_size, trust_remote_code=options.trust_remote_code),
            self.context, model=self.model, tokenizer=self.tokenizer, source=source)

    def _with_lora(self, model):
        from peft import LoraConfig, TaskType, get_peft_model

        lora = self.config.lora
        task = TaskType.SEQ_2_SEQ_LM if self.is_encoder_decoder else TaskType.CAUSAL_LM
        try:
            adapter = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=lora.target_modules, task_type=task)
            return get_peft_model(model, adapter)
        except ValueError as exc:
            raise UserError(f"cannot add a LoRA adapter: {exc}", "student.lora") from exc

    # -- lifecycle ------------------------------------------------------------------------------------

    def fresh(self) -> "HFStudent":
        """A new student with this one's initial weights (rebuilt from the same source and seed)."""
        return type(self)(self.config, self.context, weights=self._weights)

    def save(self, path) -> None:
        """Write a folder ``from_pretrained`` loads (a LoRA adapter is merged into the weights)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.model
        if self.config.lora is not None:
            # merge a copy so the live student keeps training its adapter
            model = copy.deepcopy(self.model).merge_and_unload()
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def load(self, path) -> "HFStudent":
        """A student of this config with the weights saved at ``path`` (a LoRA config adds a new adapter,
        which starts as a no-op, on top of the saved merged weights)."""
        if not Path(path).exists():
            raise UserError(f"saved student {str(path)!r} does not exist", "student.load")
        return type(self)(self.config, self.context, weights=path)

    # -- generation -----------------------------------------------------------------------------------

    @property
    def endpoint(self) -> HFEndpoint:
        """The endpoint over the current weights; its cache identity tracks them."""
        self._endpoint.model, self._endpoint.tokenizer = self.model, self.tokenizer
        return self._endpoint

    def generate(self, requests: list[GenerationRequest], *, description: str | None = None) -> list[list[Completion]]:
        return self.endpoint.generate(requests, description=description or "student generation")

    # -- training -------------------------------------------------------------------------------------

    def encode_example(self, record: dict[str, Any], *, max_length: int = 512, location: str = "record"):
        """(input ids, labels, weight) of one training record; labels are -100 on prompt tokens. For causal
        models the sequence is the chat-templated prompt followed by the target and EOS; for encoder-decoder
        models the labels are the target and EOS and the inputs are the prompt."""
        if record.get("target") is None:
            raise UserError("training record has no 'target'", location)
        messages = record.get("messages") or None
        if messages is None:
            if record.get("prompt") is None:
                raise UserError("training record has neither 'prompt' nor 'messages'", location)
            messages = [{"role": "user", "content": str(record["prompt"])}]
        weight = record.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0 or not math.isfinite(weight):
            raise UserError(f"'weight' must be a non-negative number, got {weight!r}", location)
        prompt = encode_prompt(self.tokenizer, messages=messages, is_encoder_decoder=self.is_encoder_decoder)
        eos = self.tokenizer.eos_token_id
        target = list(self.tokenizer(str(record["target"]), add_special_tokens=False)["input_ids"])
        if eos is not None and (not target or target[-1] != eos):
            target.append(eos)
        if self.is_encoder_decoder:
            return prompt[-max_length:], target[:max_length], float(weight)
        if len(prompt) + len(target) > max_length:
            # keep at least half the window for the target; the prompt keeps its end (the question)
            keep_target = min(len(target), max(max_length - len(prompt), max_length // 2))
            keep_prompt = max_length - keep_target
            prompt, target = (prompt[-keep_prompt:] if keep_prompt > 0 else []), target[:keep_target]
        return prompt + target, [-100] * len(prompt) + target, float(weight)

    def _collate(self, examples) -> dict:
        """A right-padded training batch of encoded examples: input ids, attention mask, labels (-100 outside
        targets), per-row weights and, for encoder-decoder models, the shifted decoder inputs."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(e[0]) for e in examples)
        input_ids = torch.full((len(examples), width), pad, dtype=torch.long)
        attention = torch.zeros((len(examples), width), dtype=torch.long)
        label_width = max(len(e[1]) for e in examples)
        labels = torch.full((len(examples), label_width), -100, dtype=torch.long)
        for i, (ids, labs, _) in enumerate(examples):
            input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, :len(ids)] = 1
            labels[i, :len(labs)] = torch.tensor(labs, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels,
                 "weights": torch.tensor([e[2] for e in examples], dtype=torch.float32)}
        if self.is_encoder_decoder:
            batch["decoder_input_ids"] = self._decoder_inputs(labels)
        return batch

    def _batch(self, examples):
        batch = self._collate(examples)
        return (batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                batch["labels"].to(self.device), batch["weights"].to(self.device))

    def _decoder_inputs(self, labels):
        config = self.model.config
        start = getattr(config, "decoder_start_token_id", None)
        if start is None:
            start = self.tokenizer.pad_token_id
        shifted = labels.new_full(labels.shape, start)
        shifted[:, 1:] = labels[:, :-1]
        return shifted.masked_fill(shifted == -100, self.tokenizer.pad_token_id)

    def _batch_loss(self, batch):
        """Weighted mean token cross-entropy over target tokens (the engine's SFT loss) and the token count."""
        from stillroom.training import target_cross_entropy

        input_ids, attention, labels, weights = batch
        inputs = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "weights": weights}
        if self.is_encoder_decoder:
            inputs["decoder_input_ids"] = self._decoder_inputs(labels)
            count = int((labels != -100).sum())
        else:
            count = int((labels[:, 1:] != -100).sum())
        return target_cross_entropy(self.model, inputs), count

    def _encode_all(self, records, max_length):
        if not records:
            raise UserError("no training records", "student.fit")
        examples = []
        for index, record in enumerate(records):
            label = record.get("id", index) if isinstance(record, dict) else index
            if not isinstance(record, dict):
                raise UserError(f"training record must be a dict, got {type(record).__name__}", f"record {label}")
            examples.append(self.encode_example(record, max_length=max_length, location=f"record {label}"))
        return examples

    def target_loss(self, records: list[dict[str, Any]], *, batch_size: int = 16, max_length: int = 512) -> float:
        """Mean cross-entropy per target token over ``records`` with the current weights (no training)."""
        import torch

        examples = self._encode_all(records, max_length)
        was_training = self.model.training
        self.model.eval()
        total = count = 0.0
        try:
            with torch.no_grad(), small_model_threads(self.model):
                for start in range(0, len(examples), batch_size):
                    chunk = [(ids, labels, 1.0) for ids, labels, _ in examples[start:start + batch_size]]
                    loss, n = self._batch_loss(self._batch(chunk))
                    total += float(loss) * n
                    count += n
        finally:
            self.model.train(was_training)
        return total / max(count, 1.0)

    def fit(self, records: list[dict[str, Any]], *, steps: int, batch_size: int, learning_rate: float, seed: int,
            max_length: int = 512, warmup_ratio: float = 0.0, weight_decay: float = 0.0,
            folder=None, checkpoint_dir=None, checkpoint_steps: int | None = None,
            report_to: str | list[str] = "none", description: str = "training",
            continue_from=None, total_steps: int | None = None, keep_state=None) -> dict[str, Any]:
        """Supervised fine-tuning through the training engine (see ``Student.fit``); besides the engine's
        metrics returns "loss" (mean of the last <=10 logged losses), "steps", "examples" and "losses"."""
        import tempfile

        from stillroom import training

        if steps < 1 or batch_size < 1 or learning_rate <= 0:
            raise UserError(f"fit needs steps >= 1, batch_size >= 1, learning_rate > 0 (got {steps}, "
                            f"{batch_size}, {learning_rate})", "student.fit")
        examples = self._encode_all(records, max_length)
        with tempfile.TemporaryDirectory(prefix="stillroom-fit-") as scratch:
            work = Path(folder) if folder is not None else Path(scratch)
            args = training.training_arguments(
                checkpoint_dir or Path(scratch) / "trainer", steps=total_steps or steps, batch_size=batch_size,
                learning_rate=learning_rate, seed=seed, model=self.model, warmup_ratio=warmup_ratio,
                weight_decay=weight_decay, checkpoint_steps=checkpoint_steps if checkpoint_dir else None,
                report_to=report_to, location="student.fit")
            trainer = training.build_trainer(self.model, args=args, train_dataset=examples, collate=self._collate)
            metrics = training.run_trainer(trainer, folder=work, checkpoint_dir=checkpoint_dir, seed=seed,
                                           description=description, continue_from=continue_from,
                                           stop_after=steps if total_steps else None, keep_state=keep_state)
            losses = [float(row["loss"]) for row in training.read_log_history(work)]
        self.path = None  # the weights on disk are no longer these
        tail = losses[-10:]
        return {**metrics, "loss": sum(tail) / len(tail) if tail else None, "steps": metrics["optimizer_steps"],
                "examples": len(examples), "losses": losses}
