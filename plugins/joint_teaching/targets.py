"""Pseudo-targets: the teacher's (K per input, by sampling, beam search or greedy decoding; generated once
and kept as a stage) and the student's (sampled from its current weights during training).

A teacher pseudo-target is stored as ``{"text", "finished", "tokens"}``; ``tokens`` is present when the
teacher is read through its top-k log-probs (API teachers): one ``[token, logprob, [[alt, logprob], ...]]``
per generated token, the distribution the word-level loss later distils at that position.
"""

from __future__ import annotations

from typing import Any, Sequence

from stillroom import GenerationRequest, UserError

from stillroom.plugins.joint_teaching.scoring import (encode_prompt, is_encoder_decoder, model_device,
                                                       small_model_threads, user_messages)


def finished(completion) -> bool:
    """Whether a completion ended by itself (EOS or stop), not at the length limit."""
    return completion.finish_reason != "length"


def pack_tokens(completion) -> list[list[Any]] | None:
    """A completion's per-token top-k as compact lists; the chosen token joins its own alternatives when the
    API left it out (a sampled token outside the top k)."""
    if completion.tokens is None:
        return None
    packed = []
    for token in completion.tokens:
        top = [[str(text), float(logprob)] for text, logprob in token.top]
        if all(text != token.token for text, _ in top):
            top.append([token.token, float(token.logprob)])
        packed.append([token.token, float(token.logprob), top])
    return packed


def teacher_requests(records, config, *, top_logprobs: int | None, seed: int) -> list[GenerationRequest]:
    sample = config.decoding == "sample"
    return [GenerationRequest(messages=user_messages(str(r["prompt"]), config.system_prompt),
                              max_tokens=config.max_new_tokens, n=config.pseudo_targets,
                              temperature=config.sampling_temperature if sample else 0.0,
                              top_p=config.top_p if sample else 1.0, seed=seed if sample else None,
                              logprobs=top_logprobs is not None, top_logprobs=top_logprobs or 0)
            for r in records]


def through_endpoint(teacher, records, config, *, top_logprobs: int | None, seed: int,
                     where: str) -> list[list[dict[str, Any]]]:
    """K pseudo-targets per record from the teacher's endpoint (sampling or greedy), with top-k log-probs
    when ``top_logprobs`` is set."""
    requests = teacher_requests(records, config, top_logprobs=top_logprobs, seed=seed)
    answers = teacher.generate(requests, description="joint_teaching teacher pseudo-targets")
    out = []
    for record, completions in zip(records, answers):
        pts = []
        for completion in completions:
            tokens = pack_tokens(completion) if top_logprobs is not None else None
            if top_logprobs is not None and tokens is None:
                raise UserError("the teacher's endpoint returned no logprobs; its server must support logprobs "
                                "and top_logprobs (stillroom serve and vLLM do, `transformers serve` drops them)",
                                where)
            pts.append({"text": completion.text, "finished": finished(completion), "tokens": tokens})
        out.append(pts)
    return out


def beam_search(teacher, records, config, where: str, batch_size: int = 16) -> list[list[dict[str, Any]]]:
    """The K best beams per record from a white-box teacher's ``model.generate``."""
    import torch

    model, tokenizer = teacher.model, teacher.tokenizer
    encoder_decoder = is_encoder_decoder(model)
    beams = max(config.num_beams, config.pseudo_targets)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = model_device(model)
    out: list[list[dict[str, Any]]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), small_model_threads(model):
            for begin in range(0, len(records), batch_size):
                chunk = records[begin:begin + batch_size]
                prompts = [encode_prompt(tokenizer, str(r["prompt"]), is_encoder_decoder=encoder_decoder,
                                         system_prompt=config.system_prompt) for r in chunk]
                width = max(1, max(len(p) for p in prompts))
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attention = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, prompt in enumerate(prompts):  # left padding: every prompt ends at the same column
                    if prompt:
                        input_ids[row, width - len(prompt):] = torch.tensor(prompt)
                        attention[row, width - len(prompt):] = 1
                sequences = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                           num_beams=beams, num_return_sequences=config.pseudo_targets,
                                           do_sample=False, max_new_tokens=config.max_new_tokens,
                                           pad_token_id=pad, eos_token_id=eos, early_stopping=True)
                start = 1 if encoder_decoder else width
                generated = sequences[:, start:].tolist()
                for row in range(len(chunk)):
                    pts = []
                    for ids in generated[row * config.pseudo_targets:(row + 1) * config.pseudo_targets]:
                        ended = eos is not None and eos in ids
                        if ended:
                            ids = ids[:ids.index(eos)]
                        while ids and ids[-1] == pad:
                            ids = ids[:-1]
                        pts.append({"text": tokenizer.decode(ids, skip_special_tokens=True), "finished": ended,
                                    "tokens": None})
                    out.append(pts)
    except (ValueError, TypeError) as exc:
        raise UserError(f"beam search with the teacher's model failed: {exc}", where) from exc
    finally:
        model.train(was_training)
    return out


def student_targets(student, prompts: Sequence[str], config, *, seed: int) -> list[dict[str, Any]]:
    """One pseudo-target per prompt sampled from the student's current weights (through its generate, so
    any student kind works)."""
    requests = [GenerationRequest(messages=user_messages(p), max_tokens=config.max_new_tokens,
                                  temperature=config.student_temperature, top_p=config.student_top_p,
                                  seed=seed * 100_003 + i)
                for i, p in enumerate(prompts)]
    answers = student.generate(requests, description="joint_teaching student pseudo-targets")
    return [{"text": a[0].text if a else "", "finished": finished(a[0]) if a else False} for a in answers]
