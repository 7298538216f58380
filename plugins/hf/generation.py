"""Batched generation over a transformers model: many requests, each with its own sampling parameters, in
as few ``model.generate`` calls as the batch size allows. Shared by the hf endpoint and ``stillroom serve``.

Per-row behaviour is what makes mixed batches possible and answers independent of batching: a logits
processor picks every row's token itself (greedy, or temperature + top-p with the row's own seeded
``torch.Generator``) and a stopping criterion ends each row at its own EOS, stop string or ``max_tokens``.
So a seeded request gives the same answer alone or in a batch, and any requests can share a batch.

The same criterion ends the rows of a request nobody waits for any more (``cancelled``, set by `stillroom
serve` when a client leaves, times out or the server stops): once every row is ended the batch stops, and the
other rows of a partly cancelled batch go on exactly as they would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from stillroom import Completion, GenerationRequest, TokenLogprob

from stillroom.plugins.hf.loading import encode_prompt, eos_ids

_SEED_STRIDE = 1_000_003


def sample_seed(request: GenerationRequest, sample: int) -> int:
    """The generator seed of one sample: fixed by the request's seed, else drawn from torch's global RNG
    (so ``torch.manual_seed`` makes unseeded sampling reproducible too)."""
    import torch

    if request.seed is not None:
        return (int(request.seed) * _SEED_STRIDE + sample) % (2**63 - 1)
    return int(torch.randint(0, 2**62, (1,)).item())


@dataclass
class _Row:
    request_index: int
    sample: int
    ids: list[int]
    request: GenerationRequest
    seed: int
    copies: list[int] = field(default_factory=list)  # further sample indices a greedy row stands for


class _TokenChooser:
    """Chooses each row's next token (argmax, or seeded temperature/top-p sampling) and records logprobs of
    the model's unscaled distribution; returns scores that make greedy decoding pick exactly that token."""

    def __init__(self, rows: list[_Row], device, want_logprobs: bool, top_k: int):
        import torch

        self.sampled = [i for i, r in enumerate(rows) if r.request.temperature > 0]
        self.sampled_index = torch.tensor(self.sampled, dtype=torch.long, device=device)
        self.temperature = torch.tensor([rows[i].request.temperature for i in self.sampled], device=device)
        self.top_p = torch.tensor([rows[i].request.top_p for i in self.sampled], device=device)
        self.generators = []
        for i in self.sampled:
            generator = torch.Generator()
            generator.manual_seed(rows[i].seed)
            self.generators.append(generator)
        self.device = device
        self.want_logprobs = want_logprobs
        self.top_k = top_k
        self.chosen: list[Any] = []
        self.chosen_logprob: list[Any] = []
        self.top_ids: list[Any] = []
        self.top_logprobs: list[Any] = []

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        chosen = scores.argmax(dim=-1)
        if self.sampled:
            picked = scores.index_select(0, self.sampled_index) / self.temperature[:, None]
            probs = torch.softmax(picked, dim=-1)
            sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True, stable=True)
            before = sorted_probs.cumsum(dim=-1) - sorted_probs
            sorted_probs = sorted_probs * (before < self.top_p[:, None])  # nucleus; the top token always stays
            cumulative = sorted_probs.cumsum(dim=-1)
            draws = torch.cat([torch.rand(1, generator=g) for g in self.generators]).to(self.device)
            position = torch.searchsorted(cumulative, (draws * cumulative[:, -1]).unsqueeze(1).contiguous())
            position = position.clamp(max=scores.shape[-1] - 1)
            chosen[self.sampled_index] = sorted_ids.gather(1, position).squeeze(1)
        if self.want_logprobs:
            logprobs = torch.log_softmax(scores, dim=-1)
            self.chosen_logprob.append(logprobs.gather(1, chosen[:, None]).squeeze(1))
            if self.top_k:
                values, ids = logprobs.topk(min(self.top_k, logprobs.shape[-1]), dim=-1)
                self.top_logprobs.append(values)
                self.top_ids.append(ids)
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, chosen[:, None], 0.0)
        return forced


class _RowStopper:
    """Ends each row at an EOS token, at the first of its stop strings, at its own ``max_tokens``, or as soon as
    ``cancelled(row)`` says nobody waits for it, and remembers where and why."""

    def __init__(self, rows: list[_Row], start: int, eos: list[int], tokenizer, device,
                 cancelled: Callable[[int], bool] | None = None):
        import torch

        self.start = start
        self.eos = torch.tensor(eos or [-1], device=device)
        self.max_tokens = torch.tensor([r.request.max_tokens for r in rows], device=device)
        self.stops = [list(r.request.stop) for r in rows]
        self.window = max([4 * len(s) + 2 for stops in self.stops for s in stops] or [0])
        self.tokenizer = tokenizer
        self.cancelled = cancelled
        self.length: dict[int, int] = {}
        self.reason: dict[int, str] = {}

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        generated = input_ids.shape[1] - self.start
        is_eos = torch.isin(input_ids[:, -1], self.eos)
        done = is_eos | (generated >= self.max_tokens)
        done_list = done.tolist()
        eos_list = is_eos.tolist()
        tail = None
        for row, finished in enumerate(done_list):
            if row in self.length:
                continue
            if self.cancelled is not None and self.cancelled(row):
                # a flag read once per token: the batch ends within one step of its last row being cancelled
                self.length[row] = generated
                self.reason[row] = "cancelled"
                done_list[row] = True
            elif finished:
                self.length[row] = generated - (1 if eos_list[row] else 0)
                self.reason[row] = "eos" if eos_list[row] else "length"
            elif self.stops[row]:
                if tail is None:
                    tail = input_ids[:, max(self.start, input_ids.shape[1] - self.window):].tolist()
                text = self.tokenizer.decode(tail[row], skip_special_tokens=True)
                if any(stop in text for stop in self.stops[row]):
                    self.length[row] = generated
                    self.reason[row] = "stop"
                    done_list[row] = True
        return torch.tensor(done_list, dtype=torch.bool, device=input_ids.device)


def _generation_config(model, tokenizer, max_new_tokens: int, eos: list[int]):
    from transformers import GenerationConfig

    # A fresh config, not the model's: the request alone decides how to sample (no hidden top_k or
    # repetition penalty from the hub's generation_config.json).
    base = model.generation_config
    decoder_start = getattr(base, "decoder_start_token_id", None)
    if decoder_start is None:
        decoder_start = getattr(model.config, "decoder_start_token_id", None)
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=eos or None,
                            bos_token_id=getattr(base, "bos_token_id", None),
                            decoder_start_token_id=decoder_start, use_cache=True)


def _token_text(tokenizer, token_id: int, memo: dict[int, str]) -> str:
    if token_id not in memo:
        memo[token_id] = tokenizer.decode([token_id])
    return memo[token_id]


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


def _run_rows(model, tokenizer, rows: list[_Row], eos: list[int], is_encoder_decoder: bool,
              cancelled: Callable[[int], bool] | None = None) -> list[Completion]:
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    device = next(model.parameters()).device
    width = max(len(r.ids) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row.ids:
            input_ids[i, width - len(row.ids):] = torch.tensor(row.ids)
            attention[i, width - len(row.ids):] = 1
    want_logprobs = any(r.request.logprobs for r in rows)
    top_k = max((r.request.top_logprobs for r in rows if r.request.logprobs), default=0)
    chooser = _TokenChooser(rows, device, want_logprobs, top_k)
    start = 1 if is_encoder_decoder else width
    row_cancelled = None if cancelled is None else (lambda i: cancelled(rows[i].request_index))
    stopper = _RowStopper(rows, start, eos, tokenizer, device, row_cancelled)
    config = _generation_config(model, tokenizer, max(r.request.max_tokens for r in rows), eos)
    with torch.inference_mode():
        sequences = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                   generation_config=config, logits_processor=LogitsProcessorList([chooser]),
                                   stopping_criteria=StoppingCriteriaList([stopper]))
    generated = sequences[:, start:].tolist()
    if want_logprobs and chooser.chosen_logprob:
        chosen_logprob = torch.stack(chooser.chosen_logprob, dim=1).tolist()
        top_ids = torch.stack(chooser.top_ids, dim=1).tolist() if top_k else None
        top_values = torch.stack(chooser.top_logprobs, dim=1).tolist() if top_k else None
    memo: dict[int, str] = {}
    completions = []
    for i, row in enumerate(rows):
        request = row.request
        length = stopper.length.get(i, len(generated[i]))
        ended = stopper.reason.get(i, "length")
        tokens = generated[i][:length]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        text, stopped = _cut_at_stop(text, request.stop)
        reason = "cancelled" if ended == "cancelled" else "stop" if stopped or ended != "length" else "length"
        token_logprobs = None
        if request.logprobs:
            token_logprobs = []
            for step, token_id in enumerate(tokens):
                top = []
                if request.top_logprobs and top_k:
                    top = [(_token_text(tokenizer, tid, memo), float(lp))
                           for tid, lp in zip(top_ids[i][step][:request.top_logprobs],
                                              top_values[i][step][:request.top_logprobs])]
                token_logprobs.append(TokenLogprob(token=_token_text(tokenizer, token_id, memo),
                                                   logprob=float(chosen_logprob[i][step]), top=top))
        emitted = length + (1 if ended == "eos" else 0)  # the EOS token was generated too
        completions.append(Completion(text=text, finish_reason=reason, tokens=token_logprobs,
                                      prompt_tokens=len(row.ids), completion_tokens=emitted))
    return completions


def generate(model, tokenizer, requests: list[GenerationRequest], *, batch_size: int = 16,
             is_encoder_decoder: bool = False,
             cancelled: Callable[[int], bool] | None = None) -> list[list[Completion]]:
    """``request.n`` completions per request, in order. Rows (one per sample; one per greedy request) are
    sorted by ``max_tokens`` and prompt length and cut into batches of ``batch_size``. ``cancelled(index)``,
    read before each batch and at every token (from another thread), says that nobody waits for request
    ``index`` any more: its rows end at once with ``finish_reason="cancelled"`` (a batch of only such rows is
    skipped or stops) and the other rows are unaffected."""
    eos = eos_ids(model, tokenizer)
    rows: list[_Row] = []
    answers: list[list[Completion | None]] = [[None] * r.n for r in requests]
    for index, request in enumerate(requests):
        ids = encode_prompt(tokenizer, messages=request.messages, prompt=request.prompt,
                            is_encoder_decoder=is_encoder_decoder)
        if not ids:  # a causal model needs at least one token to continue from
            fallback = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (eos or [tokenizer.pad_token_id])[0]
            ids = [fallback]
        if request.n < 1:
            continue
        if request.max_tokens <= 0:
            for sample in range(request.n):
                answers[index][sample] = Completion(text="", finish_reason="length", tokens=[] if request.logprobs else None,
                                                    prompt_tokens=len(ids), completion_tokens=0)
            continue
        if request.temperature <= 0:
            # greedy samples are identical: generate once, copy
            rows.append(_Row(index, 0, ids, request, 0, copies=list(range(1, request.n))))
        else:
            rows.extend(_Row(index, s, ids, request, sample_seed(request, s)) for s in range(request.n))
    rows.sort(key=lambda r: (r.request.max_tokens, len(r.ids)))
    for begin in range(0, len(rows), max(1, batch_size)):
        chunk = rows[begin:begin + batch_size]
        if cancelled is not None and all(cancelled(row.request_index) for row in chunk):
            done = [Completion(text="", finish_reason="cancelled", tokens=[] if row.request.logprobs else None,
                               prompt_tokens=len(row.ids)) for row in chunk]
        else:
            done = _run_rows(model, tokenizer, chunk, eos, is_encoder_decoder, cancelled)
        for row, completion in zip(chunk, done):
            answers[row.request_index][row.sample] = completion
            for copy in row.copies:
                answers[row.request_index][copy] = completion.model_copy(deep=True)
    return answers  # type: ignore[return-value]


def score_sequences(model, sequences: list[list[int]], top_k: int, *, batch_size: int = 16, pad_id: int = 0,
                    chosen: bool = False):
    """Prompt scoring in one forward pass per batch: per token sequence, numpy ``(indices int32, logprobs
    float32)`` of shape (len, top_k), row i the model's top-k at position i given the tokens before it (row 0:
    -1 / -inf). Sequences are sorted by length and right-padded, so padding never shifts a position.
    ``chosen``: each answer also carries the log-prob of the sequence's own token at every position and its
    rank (1 = most likely), both (len,) with NaN / 0 in row 0, as `stillroom serve` reports them."""
    import numpy as np
    import torch

    device = next(model.parameters()).device
    vocab = int(model.get_output_embeddings().weight.shape[0]) if model.get_output_embeddings() is not None else None
    out: list[tuple[Any, Any] | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for begin in range(0, len(order), max(1, batch_size)):
        chunk = order[begin:begin + batch_size]
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), max(width, 1)), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            ids[row, :len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
            attention[row, :len(sequences[i])] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
            k = min(top_k, logits.shape[-1] if vocab is None else min(vocab, logits.shape[-1]))
            # on the whole (contiguous) tensor, then sliced: log_softmax over a strided view is ~2x slower
            logprobs = torch.log_softmax(logits.float(), dim=-1)[:, :-1]
            values, indices = logprobs.topk(k, dim=-1) if k > 0 else (logprobs[..., :0], logprobs[..., :0].long())
            if chosen:
                actual = logprobs.gather(-1, ids[:, 1:, None].to(logprobs.device))
                ranks = (logprobs > actual).sum(-1).add(1).cpu().numpy()
                actual = actual.squeeze(-1).cpu().numpy()
            del logprobs
        values, indices = values.cpu().numpy(), indices.to(torch.int32).cpu().numpy()
        for row, i in enumerate(chunk):
            length = len(sequences[i])
            top_ids = np.full((length, top_k), -1, dtype=np.int32)
            top_values = np.full((length, top_k), -np.inf, dtype=np.float32)
            if length > 1:
                top_ids[1:, :k] = indices[row, :length - 1]
                top_values[1:, :k] = values[row, :length - 1]
            if chosen:
                own = np.full(length, np.nan, dtype=np.float32)
                rank = np.zeros(length, dtype=np.int64)
                own[1:] = actual[row, :length - 1]
                rank[1:] = ranks[row, :length - 1]
                out[i] = (top_ids, top_values, own, rank)
            else:
                out[i] = (top_ids, top_values)
    return out
