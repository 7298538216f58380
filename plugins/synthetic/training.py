"""Building and training the quickstart's tiny Llamas (through the training engine, on freshly drawn
problems), and greedy held-out scoring.

The sequence layout matches what a chat endpoint sends: the chat template around the prompt, then the target
and the end-of-turn token; the loss covers the target and the end token only.
"""

from __future__ import annotations

import random
import time
from typing import Callable

from stillroom.plugins.synthetic.arithmetic import record, stream
from stillroom.plugins.synthetic.config import ArithmeticTask, TinyModelShape, TrainingRun


def build_llama(tokenizer, shape: TinyModelShape, seed: int):
    """A randomly initialised Llama sized for ``tokenizer`` (tied embeddings, no bias)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=shape.hidden,
                         intermediate_size=shape.intermediate or 2 * shape.hidden,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.heads, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def chat_frame(tokenizer) -> tuple[str, str]:
    """The text the chat template puts before and after a single user message (generation prompt included)."""
    marker = "\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                         add_generation_prompt=True)
    before, after = text.split(marker)
    return before, after


def encode_batch(tokenizer, frame: tuple[str, str], prompts: list[str], targets: list[str]):
    """Right-padded input ids, attention mask and labels (-100 outside target and end token)."""
    import torch

    prefix = tokenizer([frame[0] + p + frame[1] for p in prompts], add_special_tokens=False)["input_ids"]
    answer = tokenizer([t + tokenizer.eos_token for t in targets], add_special_tokens=False)["input_ids"]
    length = max(len(a) + len(b) for a, b in zip(prefix, answer))
    ids = torch.full((len(prompts), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(prompts), length), -100, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, (a, b) in enumerate(zip(prefix, answer)):
        ids[row, :len(a) + len(b)] = torch.tensor(a + b)
        labels[row, len(a):len(a) + len(b)] = torch.tensor(b)
        mask[row, :len(a) + len(b)] = 1
    return ids, mask, labels


def train_on_task(model, tokenizer, task: ArithmeticTask, training: TrainingRun, *,
                  report: Callable[[str], None] | None = None, description: str = "quickstart teacher",
                  location: str = "teacher.training") -> dict:
    """Train ``model`` through the training engine on ``steps x batch_size`` problems drawn in order from the
    training side of ``task`` (fresh problems every step, as many small steps suit models this small);
    returns loss and timing. ``report`` is kept for callers; the engine prints progress itself."""
    import tempfile
    from pathlib import Path

    from stillroom import training as engine

    frame = chat_frame(tokenizer)
    problems = stream(task, "train", training.seed)
    story = random.Random(f"teacher-story:{training.seed}")
    rows = []
    for _ in range(training.steps * training.batch_size):
        problem = next(problems)
        phrased = story if task.word_problems and story.random() < task.word_problems else None
        rows.append(record(problem, "train", 0, phrased))

    def collate(batch):
        ids, _, labels = encode_batch(tokenizer, frame, [r["prompt"] for r in batch], [r["target"] for r in batch])
        # right padding under causal attention: no real token sees a pad, so no mask is needed (~15% faster)
        return {"input_ids": ids, "labels": labels}

    def loss(model, inputs, consumption):
        return model(**inputs).loss

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stillroom-teacher-") as scratch:
        args = engine.training_arguments(
            Path(scratch) / "trainer", steps=training.steps, batch_size=training.batch_size,
            learning_rate=training.learning_rate, seed=training.seed, model=model,
            warmup_ratio=min(training.warmup_steps / training.steps, 0.99), weight_decay=training.weight_decay,
            location=location)
        trainer = engine.build_trainer(model, args=args, train_dataset=rows, collate=collate, loss=loss, ordered=True)
        metrics = engine.run_trainer(trainer, folder=Path(scratch), seed=training.seed,
                                     description=description)
    losses_tail = metrics.get("final_loss")
    return {"loss": round(float(losses_tail or 0.0), 4), "steps": metrics["optimizer_steps"],
            "train_seconds": round(time.perf_counter() - start, 1)}


def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 256) -> list[str]:
    """Greedy answers to single-turn chat prompts (left padding, stops at the end token)."""
    import torch

    frame = chat_frame(tokenizer)
    out: list[str] = []
    with torch.inference_mode():
        for begin in range(0, len(prompts), batch_size):
            texts = [frame[0] + p + frame[1] for p in prompts[begin:begin + batch_size]]
            batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = generated[:, batch["input_ids"].shape[1]:]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return out
