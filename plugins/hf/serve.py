"""`stillroom serve MODEL`: an OpenAI-compatible HTTP server over an in-process transformers model.

Chat and text completions with n, temperature, top_p, max_tokens, seed, stop and logprobs (which
`transformers serve` drops), in the shapes the `openai` SDK parses. Requests that arrive together are
batched: handlers put their requests on an asyncio queue; one worker collects whatever arrives within a few
milliseconds (up to --max-batch sequences) and runs one batched generate for all of it in a thread, so the
event loop keeps accepting requests meanwhile. It answers fresh every time (no call cache): caching is the
client's job, and /stats lets tests prove a cached rerun sent nothing.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any, Optional

import typer

from pydantic import BaseModel, ConfigDict, Field

from stillroom import Completion, GenerationRequest

if TYPE_CHECKING:
    from stillroom.plugins.hf.endpoint import HFEndpoint


def register_serve(cli: typer.Typer) -> None:
    @cli.command("serve")
    def serve(model: str = typer.Argument(..., help="hub id or local folder of the model to serve"),
              host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback by default)"),
              port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
              max_batch: int = typer.Option(16, "--max-batch", min=1,
                                            help="most sequences generated together in one batch"),
              dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16"),
              device: str = typer.Option("auto", "--device", help="torch device; auto is cuda when available"),
              name: Optional[str] = typer.Option(None, "--name", help="model name to report (default: MODEL)"),
              batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0.0,
                                                  help="how long to wait for more requests to batch together"),
              trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                                     help="allow model code from the hub to run"),
              max_body_mb: float = typer.Option(4.0, "--max-body-mb", min=0.001,
                                                help="largest request body accepted, in MB (larger: 413)"),
              max_tokens_limit: int = typer.Option(4096, "--max-tokens-limit", min=1,
                                                   help="most tokens one completion may generate (max_tokens "
                                                        "is capped by this and by the model's context)"),
              request_timeout: float = typer.Option(600.0, "--request-timeout", min=0.1,
                                                    help="seconds a request may wait and run before a 504")):
        """Serve a model over an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models)."""
        import uvicorn

        from stillroom.plugins.hf.endpoint import HFEndpoint
        from stillroom import Context, UserError

        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16", "--dtype")
        endpoint = HFEndpoint(HFEndpoint.Config(model=model, dtype=dtype, device=device, batch_size=max_batch,
                                                trust_remote_code=trust_remote_code),
                              Context(cache=None, progress=False))
        app = create_app(endpoint, name=name or model, max_batch=max_batch, batch_wait_s=batch_wait_ms / 1000,
                         aliases=(model,), max_body_bytes=int(max_body_mb * 1_000_000),
                         max_tokens_limit=max_tokens_limit, request_timeout_s=request_timeout)
        print(f"serving {name or model} on http://{host}:{port}/v1", file=sys.stderr, flush=True)
        # SIGTERM: uvicorn stops accepting, gives open requests 2 s, then returns; a batch still generating in
        # its worker thread would keep the interpreter alive until it ends, so the process exits here instead.
        batcher = app.state.batcher

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame):
                # answer every open request with a 503 at once, so the graceful shutdown has nothing to wait for
                if batcher.loop is not None:
                    batcher.loop.call_soon_threadsafe(batcher.shut_down)
                super().handle_exit(sig, frame)

        Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)).run()
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(0)


class ShuttingDown(Exception):
    """The server received SIGTERM/SIGINT while a request waited or ran."""


class Ticket:
    """One handler's requests waiting for the worker; ``cancelled`` drops what has not started. A ticket with
    more requests than one batch holds is generated in parts, and answered when its last part is done."""

    def __init__(self, requests: list[GenerationRequest], future: asyncio.Future, order: int):
        self.requests = requests
        self.future = future
        self.order = order
        self.size = sum(r.n for r in requests)
        self.longest = max((r.max_tokens for r in requests), default=0)
        self.cancelled = False
        self.scheduled = 0  # requests handed to the worker so far
        self.answers: list = [None] * len(requests)
        self.answered = 0

    def take(self, room: int, first: bool) -> tuple[int, int]:
        """The next requests that fit in ``room`` sequences (at least one when ``first``): (start, end)."""
        begin = end = self.scheduled
        while end < len(self.requests) and (self.requests[end].n <= room or (first and end == begin)):
            room -= self.requests[end].n
            end += 1
        self.scheduled = end
        return begin, end

    def fill(self, begin: int, answers: list) -> None:
        self.answers[begin:begin + len(answers)] = answers
        self.answered += len(answers)
        if self.answered == len(self.requests) and not self.future.done():
            self.future.set_result(self.answers)


class Batcher:
    """Collects requests from concurrent handlers and answers them with as few generate calls as it can.

    One batch runs at a time, in a worker thread, so the event loop keeps accepting requests. Between batches
    the worker picks again among everything waiting, shortest ``max_tokens`` first, so a small request is not
    stuck behind long ones (a batch lasts as long as its longest row); requests whose client left or whose
    time ran out are dropped before they start, and while they generate their rows end at the next token (a
    batch whose every request is cancelled stops; the rest of a partly cancelled batch runs on)."""

    def __init__(self, endpoint, *, max_batch: int, wait_s: float):
        self.endpoint = endpoint
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.waiting: list[Ticket] = []
        self.arrived: asyncio.Event | None = None
        self.requests = 0
        self.batches = 0
        self.sequences = 0
        self.cancelled = 0
        self.stopped_batches = 0  # batches ended early because every request in them was cancelled
        self.cancelled_sequences = 0  # completions cut short (or never started): their request was cancelled
        self._order = 0
        self.running: list[Ticket] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closing = False

    def shut_down(self) -> None:
        """Fail every waiting and running request with ShuttingDown (their handlers answer 503)."""
        self.closing = True
        for ticket in [*self.waiting, *self.running]:
            ticket.cancelled = True  # the running batch stops at its next token, so the process can exit
            if not ticket.future.done():
                ticket.future.set_exception(ShuttingDown("the server is shutting down"))
        self.waiting.clear()

    def enqueue(self, requests: list[GenerationRequest]) -> Ticket:
        self.requests += 1
        self._order += 1
        ticket = Ticket(requests, asyncio.get_running_loop().create_future(), self._order)
        if self.closing:
            ticket.future.set_exception(ShuttingDown("the server is shutting down"))
            return ticket
        self.waiting.append(ticket)
        self.arrived.set()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        if not ticket.cancelled and not ticket.future.done():
            ticket.cancelled = True
            self.cancelled += 1

    async def submit(self, requests: list[GenerationRequest]):
        ticket = self.enqueue(requests)
        try:
            return await asyncio.shield(ticket.future)
        except asyncio.CancelledError:
            self.cancel(ticket)
            raise

    def _pick(self) -> list[tuple[Ticket, int, int]]:
        """The next batch: parts of the waiting tickets, fewest ``max_tokens`` first, up to max_batch sequences."""
        self.waiting = [t for t in self.waiting if not t.cancelled and not t.future.done()]
        self.waiting.sort(key=lambda t: (t.longest, t.order))
        parts, room = [], self.max_batch
        for ticket in self.waiting:
            begin, end = ticket.take(room, first=not parts)
            if end > begin:
                parts.append((ticket, begin, end))
                room -= sum(r.n for r in ticket.requests[begin:end])
            if room <= 0 or end < len(ticket.requests):
                break
        self.waiting = [t for t in self.waiting if t.scheduled < len(t.requests)]
        return parts

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            while not any(not t.cancelled for t in self.waiting):
                self.waiting.clear()
                self.arrived.clear()
                await self.arrived.wait()
            # a short window for requests sent together to share the batch
            deadline = loop.time() + self.wait_s
            while sum(t.size for t in self.waiting if not t.cancelled) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            parts = self._pick()
            if not parts:
                continue
            flat = [r for ticket, begin, end in parts for r in ticket.requests[begin:end]]
            self.batches += 1
            self.sequences += sum(r.n for r in flat)
            self.running = tickets = [ticket for ticket, _, _ in parts]
            owners = [ticket for ticket, begin, end in parts for _ in range(begin, end)]
            # read by the generation thread at every token; set here, on the event loop, by cancel/shut_down
            generate = functools.partial(self.endpoint._generate, flat, cancelled=lambda i: owners[i].cancelled)
            try:
                answers = await loop.run_in_executor(None, generate)
            except Exception as exc:  # answer every waiting handler, keep serving
                for ticket in self.running:
                    if not ticket.future.done():
                        ticket.future.set_exception(exc)
                continue
            finally:
                self.running = []
            cut = sum(c.finish_reason == "cancelled" for completions in answers for c in completions)
            self.cancelled_sequences += cut
            if cut and all(ticket.cancelled for ticket in tickets):
                self.stopped_batches += 1
            start = 0
            for ticket, begin, end in parts:
                ticket.fill(begin, answers[start:start + end - begin])
                start += end - begin


class Sampling(BaseModel):
    """Sampling fields shared by chat and text completions (OpenAI names; unknown fields are ignored)."""

    model_config = ConfigDict(extra="allow")

    model: Optional[str] = None
    n: int = Field(1, ge=1, le=128)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=0)
    seed: Optional[int] = None
    stop: Optional[str | list[str]] = None
    stream: bool = False


class ChatBody(Sampling):
    """The body of POST /v1/chat/completions."""

    messages: list[dict[str, Any]]
    max_completion_tokens: Optional[int] = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)


class CompletionBody(Sampling):
    """The body of POST /v1/completions; ``logprobs`` is the number of alternatives (legacy API). ``prompt`` may
    be token ids, as OpenAI's API allows. ``echo`` with ``logprobs`` scores the prompt's own tokens (with
    ``max_tokens=0``, nothing is generated); ``prompt_logprobs`` is vLLM's form of the same."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: Optional[int] = Field(None, ge=0, le=100)
    echo: bool = False
    prompt_logprobs: Optional[int] = Field(None, ge=0, le=100)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _stops(stop) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def _prompt_list(prompt) -> list[str | list[int]]:
    """The prompts of a completions body: one text, texts, one token-id list, or token-id lists."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    return list(prompt)


def _score_prompts(endpoint, prompts: list, top_k: int) -> list[dict[str, Any]]:
    """Score every prompt's own tokens in one batched forward pass: the legacy echo layout (decoded tokens,
    their log-probs, top alternatives by text, offsets) and vLLM's ``prompt_logprobs`` (keyed by token id)."""
    import math

    from stillroom.plugins.hf.loading import encode_prompt

    tokenizer = endpoint.tokenizer
    sequences = [list(p) if not isinstance(p, str) else encode_prompt(tokenizer, prompt=p) for p in prompts]
    answers = endpoint.score_tokens(sequences, top_k, chosen=True)
    memo: dict[int, str] = {}

    def piece(token_id: int) -> str:
        if token_id not in memo:
            memo[token_id] = tokenizer.decode([token_id])
        return memo[token_id]

    scored = []
    for ids, (top_ids, top_values, own, rank) in zip(sequences, answers):
        tokens = [piece(t) for t in ids]
        offsets, offset = [], 0
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        token_logprobs: list[float | None] = [None]
        top_logprobs: list[dict[str, float] | None] = [None]
        vllm: list[dict[str, dict[str, Any]] | None] = [None]
        for position in range(1, len(ids)):
            token_logprobs.append(float(own[position]))
            alternatives = [(int(t), float(v)) for t, v in zip(top_ids[position], top_values[position])
                            if t >= 0 and math.isfinite(v)]
            tops: dict[str, float] = {}
            for token_id, value in alternatives:
                tops.setdefault(piece(token_id), value)  # two ids decoding alike: keep the likelier
            top_logprobs.append(tops)
            entry = {str(token_id): {"logprob": value, "rank": r + 1, "decoded_token": piece(token_id)}
                     for r, (token_id, value) in enumerate(alternatives)}
            entry.setdefault(str(ids[position]), {"logprob": float(own[position]), "rank": int(rank[position]),
                                                  "decoded_token": tokens[position]})
            vllm.append(entry)
        scored.append({"ids": ids, "text": "".join(tokens), "tokens": tokens, "token_logprobs": token_logprobs,
                       "top_logprobs": top_logprobs, "text_offset": offsets, "vllm": vllm})
    return scored


def _echo_logprobs(prompt: dict[str, Any], generated: dict[str, Any]) -> dict[str, Any]:
    """The legacy logprobs of an echoed prompt followed by the generated tokens' (offsets run on)."""
    start = len(prompt["text"])
    return {"tokens": prompt["tokens"] + generated["tokens"],
            "token_logprobs": prompt["token_logprobs"] + generated["token_logprobs"],
            "top_logprobs": prompt["top_logprobs"] + generated["top_logprobs"],
            "text_offset": prompt["text_offset"] + [start + o for o in generated["text_offset"]]}


def create_app(endpoint: HFEndpoint, *, name: str, max_batch: int = 16, batch_wait_s: float = 0.005, aliases: tuple = (),
               max_body_bytes: int = 4_000_000, max_tokens_limit: int = 4096, request_timeout_s: float = 600.0):
    """The FastAPI app over ``endpoint`` (an HFEndpoint); ``name`` is the model id it reports (``aliases``, such
    as the model's path, are accepted too). The limits are described in serve_limits."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from stillroom.plugins.hf.serve_limits import (CURRENT_RECEIVE, BodyLimit, PromptLimits, Refused, client_gone,
                                                   context_length, error_response)

    batcher = Batcher(endpoint, max_batch=max_batch, wait_s=batch_wait_s)
    limits = PromptLimits(endpoint.tokenizer, context_length(endpoint.model, endpoint.tokenizer), max_tokens_limit,
                          is_encoder_decoder=endpoint.is_encoder_decoder)
    served_names = {name, *aliases}

    @asynccontextmanager
    async def lifespan(app):
        batcher.arrived = asyncio.Event()
        batcher.loop = asyncio.get_running_loop()
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="stillroom serve", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.limits = limits
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    def error(status: int, message: str, kind: str | None = None, **fields):
        return error_response(status, message, kind=kind, **fields)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        field_path = [p for p in first[1:] if isinstance(p, str)] if all(isinstance(p, (str, int)) for p in first) else []
        return error(400, problems, param=".".join(field_path) or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown routes, wrong methods, 413 ...
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        return error(exc.status_code, str(exc.detail), code=codes.get(exc.status_code))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # a bug: still OpenAI's shape, and the server lives on
        return error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    def check_model(requested: str | None) -> None:
        if requested is not None and requested not in served_names:
            raise Refused(404, f"The model {requested!r} does not exist; this server serves {name!r}",
                          param="model", code="model_not_found")

    async def count_prompt(*, param: str, messages=None, prompt=None) -> int:
        """Prompt tokens, refusing a prompt the context cannot hold (tokenized off the event loop)."""
        if prompt is not None and not isinstance(prompt, str):  # token ids
            if limits.context is not None and len(prompt) >= limits.context:
                raise Refused(400, f"This model's maximum context length is {limits.context} tokens; the {param} "
                                   f"has {len(prompt)} tokens", param=param, code="context_length_exceeded")
            return len(prompt)
        chars = len(prompt) if prompt is not None else sum(len(m.get("content") or "") for m in messages)
        call = functools.partial(limits.check, text_chars=chars, param=param, messages=messages, prompt=prompt)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    def request_of(body: Sampling, **fields) -> GenerationRequest:
        # OpenAI's defaults: temperature 1, top_p 1 (max_tokens: 256 for chat, 16 for text, as the legacy API)
        return GenerationRequest(n=body.n, temperature=1.0 if body.temperature is None else body.temperature,
                                 top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed,
                                 stop=_stops(body.stop), **fields)

    def usage(answers) -> dict[str, int]:
        prompt = sum(a[0].prompt_tokens for a in answers if a)
        completion = sum(c.completion_tokens for a in answers for c in a)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def answer(requests):
        """The completions of ``requests``, or an error response: 504 past the request timeout, and the queued
        work dropped when the client has gone (nobody would read the answer)."""
        ticket = batcher.enqueue(requests)
        watcher = asyncio.ensure_future(client_gone(CURRENT_RECEIVE.get()))
        try:
            done, _ = await asyncio.wait({ticket.future, watcher}, timeout=request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            batcher.cancel(ticket)
            raise
        finally:
            watcher.cancel()
        if ticket.future in done:
            exc = ticket.future.exception()
            if exc is None:
                return ticket.future.result(), None
            if isinstance(exc, ShuttingDown):
                return None, error(503, str(exc), "server_error", code="shutting_down")
            # a bug or an impossible request; report it in OpenAI's error shape
            return None, error(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error")
        batcher.cancel(ticket)
        if watcher in done:
            return None, error(499, "the client closed the request", code="client_closed_request")
        return None, error(504, f"the request did not finish within {request_timeout_s:g} s (--request-timeout)",
                           code="timeout")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name}

    @app.get("/stats")
    async def stats():
        return {"requests": batcher.requests, "batches": batcher.batches, "sequences": batcher.sequences,
                "cancelled": batcher.cancelled, "waiting": len(batcher.waiting),
                "stopped_batches": batcher.stopped_batches, "cancelled_sequences": batcher.cancelled_sequences}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": int(time.time()),
                                            "owned_by": "stillroom"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody):
        if body.stream:
            return error(400, "stream=true is not supported by stillroom serve")
        messages = [{"role": str(m.get("role", "user")), "content": _text_of(m.get("content"))}
                    for m in body.messages]
        if not messages:
            return error(400, "messages must not be empty")
        try:
            check_model(body.model)
            prompt_tokens = await count_prompt(messages=messages, param="messages")
        except Refused as refused:
            return refused.response()
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_tokens = limits.max_tokens(256 if max_tokens is None else max_tokens, prompt_tokens)
        request = request_of(body, messages=messages, max_tokens=max_tokens,
                             logprobs=body.logprobs, top_logprobs=body.top_logprobs or 0 if body.logprobs else 0)
        answers, failure = await answer([request])
        if failure:
            return failure
        choices = []
        for index, completion in enumerate(answers[0]):
            logprobs = None
            if body.logprobs:
                logprobs = {"content": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                     "top_logprobs": [{"token": tok, "logprob": lp, "bytes": list(tok.encode())} for tok, lp in t.top]}
                    for t in completion.tokens or []], "refusal": None}
            choices.append({"index": index, "message": {"role": "assistant", "content": completion.text},
                            "finish_reason": completion.finish_reason or "stop", "logprobs": logprobs})
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.model or name, "choices": choices, "usage": usage(answers)}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        if body.stream:
            return error(400, "stream=true is not supported by stillroom serve")
        prompts = _prompt_list(body.prompt)
        if not prompts:
            return error(400, "prompt must not be empty")
        try:
            check_model(body.model)
            prompt_tokens = [await count_prompt(prompt=p, param="prompt") for p in prompts]
        except Refused as refused:
            return refused.response()
        max_tokens = min(limits.max_tokens(16 if body.max_tokens is None else body.max_tokens, t) for t in prompt_tokens)
        scored = None
        if body.echo or body.prompt_logprobs is not None:
            try:
                scored = await asyncio.get_running_loop().run_in_executor(
                    None, _score_prompts, endpoint, prompts, max(body.logprobs or 0, body.prompt_logprobs or 0))
            except Exception as exc:  # report it in OpenAI's error shape, keep serving
                return error(500, f"scoring failed: {type(exc).__name__}: {exc}", "server_error")
        if max_tokens > 0:
            # a token-id prompt generates from its decoded text (vLLM clients score with max_tokens=1)
            texts = [p if isinstance(p, str) else endpoint.tokenizer.decode(p) for p in prompts]
            requests = [request_of(body, prompt=p, max_tokens=max_tokens,
                                   logprobs=body.logprobs is not None, top_logprobs=body.logprobs or 0)
                        for p in texts]
            answers, failure = await answer(requests)
            if failure:
                return failure
        else:  # scoring only: nothing to generate
            answers = [[Completion(text="", finish_reason="length", tokens=[] if body.logprobs is not None else None,
                                   prompt_tokens=len(scored[i]["ids"]) if scored else 0)] * body.n
                       for i in range(len(prompts))]
        choices = []
        for prompt_index, completions_of_prompt in enumerate(answers):
            for sample, completion in enumerate(completions_of_prompt):
                logprobs = None
                if body.logprobs is not None:
                    tokens = completion.tokens or []
                    offsets, offset = [], 0
                    for t in tokens:
                        offsets.append(offset)
                        offset += len(t.token)
                    logprobs = {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
                                "top_logprobs": [dict(t.top) for t in tokens], "text_offset": offsets}
                text = completion.text
                choice = {"index": prompt_index * body.n + sample}
                if body.echo:
                    prompt = scored[prompt_index]
                    text = prompt["text"] + text
                    if logprobs is not None:
                        logprobs = _echo_logprobs(prompt, logprobs)
                if body.prompt_logprobs is not None:
                    choice["prompt_logprobs"] = scored[prompt_index]["vllm"]
                choices.append({**choice, "text": text, "finish_reason": completion.finish_reason or "stop",
                                "logprobs": logprobs})
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": body.model or name, "choices": choices, "usage": usage(answers)}

    return app
