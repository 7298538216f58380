"""Logits of a model at the target positions of (prompt, target) pairs, for causal and encoder-decoder
models alike, plus the Noisy-KD switch for a teacher's forward pass.

``target_logits`` returns a (batch, time, vocab) tensor whose row ``t`` is the model's distribution for the
target's ``t``-th token, and a (batch, time) mask of real positions: the same layout for the student and a
white-box teacher whatever their architectures, so the word-level loss compares them position by position.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

# one owner of the thread rule for small models (one intra-op thread on CPU) and of the white-box checks (is
# a model an encoder-decoder): the training engine
from stillroom.training import is_encoder_decoder, small_model_threads  # noqa: F401


def user_messages(prompt: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": str(prompt)}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def encode_prompt(tokenizer, prompt: str, *, is_encoder_decoder: bool, system_prompt: str | None = None) -> list[int]:
    """Prompt ids the way the hf plugin's students and endpoints render a one-turn chat: the chat template
    with the generation prompt for causal models that have one, else the message text with the tokenizer's
    special tokens."""
    messages = user_messages(prompt, system_prompt)
    if not is_encoder_decoder and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = "\n\n".join(m["content"] for m in messages)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_target(tokenizer, text: str, *, finished: bool = True, limit: int | None = None) -> list[int]:
    """Target ids of ``text``, with EOS appended when the text ended by itself (not cut at a length limit)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if limit is not None:
        if len(ids) >= limit:
            ids, finished = ids[:limit], False
    eos = tokenizer.eos_token_id
    if finished and eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


def model_device(model):
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def fit_length(prompt: list[int], target: list[int], max_length: int, encoder_decoder: bool):
    """Cut a pair to ``max_length``: the target keeps at least half the window, the prompt keeps its end."""
    if encoder_decoder:
        return prompt[-max_length:], target[:max_length]
    if len(prompt) + len(target) <= max_length:
        return prompt, target
    keep_target = min(len(target), max(max_length - len(prompt), max_length // 2))
    keep_prompt = max_length - keep_target
    return (prompt[-keep_prompt:] if keep_prompt > 0 else []), target[:keep_target]


def target_logits(model, tokenizer, prompts: Sequence[list[int]], targets: Sequence[list[int]], *,
                  max_length: int = 512, forward=None):
    """(logits (batch, time, vocab), mask (batch, time)): the model's logits predicting each target token.
    Runs with whatever grad mode the caller set. ``forward``: the module to run (the training engine's
    distributed wrapper of ``model``, so gradients are synchronised); default ``model``."""
    import torch

    run = forward if forward is not None else model
    device = model_device(model)
    encoder_decoder = is_encoder_decoder(model)
    pairs = [fit_length(list(p), list(t), max_length, encoder_decoder) for p, t in zip(prompts, targets)]
    batch = len(pairs)
    time = max(1, max(len(t) for _, t in pairs))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mask = torch.zeros((batch, time), dtype=torch.bool)
    for row, (_, target) in enumerate(pairs):
        mask[row, :len(target)] = True
    if encoder_decoder:
        width = max(1, max(len(p) for p, _ in pairs))
        input_ids = torch.full((batch, width), pad, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        start = getattr(model.config, "decoder_start_token_id", None)
        start = pad if start is None else start
        decoder = torch.full((batch, time), pad, dtype=torch.long)
        for row, (prompt, target) in enumerate(pairs):
            input_ids[row, :len(prompt)] = torch.tensor(prompt, dtype=torch.long)
            attention[row, :len(prompt)] = 1
            shifted = [start, *target[:-1]]
            decoder[row, :len(shifted)] = torch.tensor(shifted, dtype=torch.long)
        logits = run(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                     decoder_input_ids=decoder.to(device)).logits
        return logits, mask.to(device)
    # causal: prompt + target, right-padded; the logit at position p predicts token p + 1
    width = max(len(p) + len(t) for p, t in pairs)
    input_ids = torch.full((batch, width), pad, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    index = torch.zeros((batch, time), dtype=torch.long)
    for row, (prompt, target) in enumerate(pairs):
        sequence = prompt + target
        input_ids[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention[row, :len(sequence)] = 1
        first = max(len(prompt) - 1, 0)
        positions = torch.arange(first, first + time).clamp(max=width - 1)
        index[row] = positions
    logits = run(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    gathered = logits.gather(1, index.to(device).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    if any(len(p) == 0 for p, _ in pairs):
        # no prompt token to predict the first target token from: that position cannot be scored
        for row, (prompt, _) in enumerate(pairs):
            if not prompt:
                mask[row, 0] = False
    return gathered, mask.to(device)


@contextlib.contextmanager
def noisy(model, dropout: float):
    """Noisy KD: for the duration, dropout with probability ``dropout`` in every dropout layer, in attention
    (modules with an ``attention_dropout`` attribute) and on the input embeddings. No-op at 0."""
    if dropout <= 0:
        yield model
        return
    import torch
    import torch.nn.functional as F

    saved: list[tuple[Any, str, Any]] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            saved.append((module, "p", module.p))
            module.p = dropout
        if isinstance(getattr(module, "attention_dropout", None), float):
            saved.append((module, "attention_dropout", module.attention_dropout))
            module.attention_dropout = dropout
    handle = None
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None:
        handle = embeddings.register_forward_hook(lambda m, i, out: F.dropout(out, dropout, training=True))
    was_training = model.training
    model.train()
    try:
        yield model
    finally:
        model.train(was_training)
        if handle is not None:
            handle.remove()
        for module, name, value in saved:
            setattr(module, name, value)

