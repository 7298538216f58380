"""Prompt scoring through any OpenAI-compatible server: the log-prob of every token of a given text with its
top-k alternatives, in the two forms servers offer.

- vLLM's ``prompt_logprobs`` (an extra body field of ``/v1/completions``; ``stillroom serve`` answers it too): per
  prompt position a mapping ``{token_id: {logprob, rank, decoded_token}}`` holding the top k and the prompt's own
  token, ``None`` for the first position. Token ids make it exact, so a teacher-signal capture uses it, sending
  the sequence as token ids so the server scores exactly the tokens the student trains on. vLLM refuses
  ``max_tokens=0`` and more than ``--max-logprobs`` (default 20) alternatives: we ask for one token and discard it,
  and the server must be started with ``--max-logprobs`` of at least k.
- The legacy ``echo=true`` + ``logprobs=K`` layout (OpenAI's completions API): decoded token texts, their
  log-probs (``None`` first) and the top alternatives keyed by text. Texts cannot be mapped back to ids
  without the server's tokenizer, so it serves text-level scoring (:func:`echo_scores`), not captures.

Requests go through the endpoint's own pool: its in-flight limit, retries, budgets and accounting.
"""

from __future__ import annotations

import math
from typing import Any

from stillroom import UserError
from stillroom.plugins.openai.backoff import MalformedResponse


def _prompt_cost(endpoint, prompt_tokens: int, completion_tokens: int) -> float:
    prices = endpoint.config.prices
    return prices.cost(prompt_tokens, completion_tokens) if prices is not None else 0.0


def _count(endpoint, prompt_tokens: int) -> None:
    with endpoint._lock:
        endpoint.stats["requests"] += 1
        endpoint.stats["prompt_tokens"] += prompt_tokens


def parse_prompt_logprobs(entries: Any, ids: list[int], top_k: int):
    """``(indices, logprobs)`` arrays (len(ids), top_k) from vLLM's ``prompt_logprobs`` of one choice; raises
    MalformedResponse (retried) when the answer does not cover the sequence."""
    import numpy as np

    if not isinstance(entries, list):
        raise MalformedResponse("the answer has no prompt_logprobs list (is the server vLLM or stillroom serve?)")
    if len(entries) < len(ids):
        raise MalformedResponse(f"prompt_logprobs covers {len(entries)} positions of {len(ids)}")
    indices = np.full((len(ids), top_k), -1, dtype=np.int32)
    values = np.full((len(ids), top_k), -np.inf, dtype=np.float32)
    for position in range(1, len(ids)):
        entry = entries[position]
        if not isinstance(entry, dict):
            raise MalformedResponse(f"prompt_logprobs[{position}] is {type(entry).__name__}, not a mapping")
        items = []
        for token, info in entry.items():
            value = info.get("logprob") if isinstance(info, dict) else info  # old vLLM: {id: logprob}
            if value is None or not math.isfinite(float(value)):
                continue
            items.append((float(value), int(token)))
        items.sort(key=lambda item: -item[0])  # the prompt's own token may be an extra, lower-ranked entry
        for column, (value, token) in enumerate(items[:top_k]):
            indices[position, column] = token
            values[position, column] = value
    return indices, values


def score_sequences(endpoint, sequences: list[list[int]], top_k: int) -> list[tuple[Any, Any]]:
    """Per token sequence, the server's top-k at every position (``Endpoint.score``), through
    ``prompt_logprobs`` with the sequence sent as token ids."""
    results: list[tuple[Any, Any] | None] = [None] * len(sequences)

    async def answer(client, key: str, index: int):
        ids = [int(t) for t in sequences[index]]
        body = {"model": endpoint.config.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": top_k}

        async def call(c):
            response = await endpoint._post(c, "/completions", body)
            choices = response.get("choices") if isinstance(response, dict) else None
            if not choices:
                raise MalformedResponse(f"the server's answer has no choices: {str(response)[:120]!r}")
            entries = choices[0].get("prompt_logprobs", response.get("prompt_logprobs"))
            if entries is None:
                raise UserError("the server ignored prompt_logprobs (vLLM's prompt scoring); score with vLLM or "
                                "`stillroom serve`, which answer it", endpoint.label)
            return parse_prompt_logprobs(entries, ids, top_k)

        result = await endpoint._with_retries(client, key, f"scoring a sequence of {len(ids)} tokens", call,
                                              worst_cost=_prompt_cost(endpoint, len(ids), 1), tokens=len(ids) + 1,
                                              cost_of=lambda _: _prompt_cost(endpoint, len(ids), 1))
        _count(endpoint, len(ids))
        return result

    def keep(index: int, result) -> None:
        results[index] = result

    if sequences:
        endpoint._run_pool(len(sequences), answer, keep)
    return results  # type: ignore[return-value]


def echo_scores(endpoint, prompts: list[str | list[int]], top_k: int) -> list[dict[str, Any]]:
    """The legacy form: per prompt, ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`` of the
    echoed prompt (``echo=true``, ``logprobs=top_k``, ``max_tokens=0``), first log-prob ``None``."""
    results: list[dict[str, Any] | None] = [None] * len(prompts)

    async def answer(client, key: str, index: int):
        prompt = prompts[index]
        body = {"model": endpoint.config.model, "prompt": prompt, "max_tokens": 0, "temperature": 0.0,
                "echo": True, "logprobs": top_k}
        size = len(prompt) if isinstance(prompt, list) else len(prompt.encode()) // 4 + 1

        async def call(c):
            response = await endpoint._post(c, "/completions", body)
            choices = response.get("choices") if isinstance(response, dict) else None
            logprobs = choices[0].get("logprobs") if choices and isinstance(choices[0], dict) else None
            if not isinstance(logprobs, dict) or not isinstance(logprobs.get("tokens"), list):
                raise MalformedResponse("the echoed answer has no logprobs.tokens")
            return {name: logprobs.get(name) for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}

        result = await endpoint._with_retries(client, key, f"echo-scoring prompt {index}", call,
                                              worst_cost=_prompt_cost(endpoint, size, 0), tokens=size)
        _count(endpoint, len(result["tokens"]))
        return result

    def keep(index: int, result) -> None:
        results[index] = result

    if prompts:
        endpoint._run_pool(len(prompts), answer, keep)
    return results  # type: ignore[return-value]
