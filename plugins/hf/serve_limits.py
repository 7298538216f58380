"""The limits of `stillroom serve`: what keeps one request from taking the machine.

A request body is refused past ``max_body_bytes`` before it is read (413); a prompt longer than the model's
context is refused before it is queued (400, ``context_length_exceeded``); ``max_tokens`` is capped by what the
context leaves and by the server's ``max_tokens_limit``; a request gives up after ``request_timeout_s`` (504) and
is dropped from the queue when its client disconnects. Every error has OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``. This module checks and shapes; it never generates.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from dataclasses import dataclass
from typing import Any

# The ASGI ``receive`` of the request being handled, so a handler can notice its client leaving.
CURRENT_RECEIVE: contextvars.ContextVar = contextvars.ContextVar("stillroom_serve_receive", default=None)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          405: "invalid_request_error", 408: "timeout", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 499: "invalid_request_error", 503: "server_error", 504: "timeout"}


def error_body(status: int, message: str, *, kind: str | None = None, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object; ``message`` is cut so an echoed 500 kB value cannot become the answer."""
    if len(message) > 1000:
        message = message[:1000] + f"... ({len(message) - 1000} more characters)"
    return {"error": {"message": message, "type": kind or _TYPES.get(status, "server_error" if status >= 500
                                                                     else "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, **fields: Any):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content=error_body(status, message, **fields))


class BodyLimit:
    """ASGI middleware: a body declared or found larger than ``limit`` bytes is answered 413 without being
    read (or as soon as the limit is crossed, for a body sent in chunks). It also records each request's
    ``receive`` in CURRENT_RECEIVE."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            size = int(declared) if declared is not None else None
        except ValueError:
            size = None
        if size is not None and size > self.limit:
            return await self._refuse(scope, receive, send, size)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body") or b"")
                if seen > self.limit:
                    from fastapi import HTTPException  # FastAPI re-raises its own kind from a body read

                    raise HTTPException(413, self._message(None))
            return message

        token = CURRENT_RECEIVE.set(receive)
        try:
            await self.app(scope, counted, send)
        finally:
            CURRENT_RECEIVE.reset(token)

    def _message(self, size: int | None) -> str:
        got = f" ({size} bytes)" if size is not None else ""
        return f"the request body is too large{got}; this server accepts at most {self.limit} bytes"

    async def _refuse(self, scope, receive, send, size: int):
        body = json.dumps(error_body(413, self._message(size), code="request_too_large")).encode()
        # "connection: close": the unread body must not be taken for the next request on this connection
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def context_length(model, tokenizer) -> int | None:
    """The longest sequence (prompt + completion) the model takes, from its config; None when it says nothing."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10_000_000 else None


@dataclass
class PromptLimits:
    """Counts a request's prompt tokens and decides its ``max_tokens``; raises Refused with the answer."""

    tokenizer: Any
    context: int | None
    max_tokens_limit: int
    is_encoder_decoder: bool = False
    _longest_token: int | None = None

    def longest_token(self) -> int:
        """Characters of the vocabulary's longest token: a text longer than context x this cannot fit, so it is
        refused without tokenizing it (tokenizing megabytes is what made the server slow)."""
        if self._longest_token is None:
            try:
                vocab = self.tokenizer.get_vocab()
                self._longest_token = max((len(t) for t in vocab), default=16) or 16
            except Exception:  # a tokenizer without a vocabulary listing: a generous bound
                self._longest_token = 64
        return self._longest_token

    def count(self, *, messages=None, prompt=None) -> int:
        from stillroom.plugins.hf.loading import encode_prompt

        return len(encode_prompt(self.tokenizer, messages=messages, prompt=prompt,
                                 is_encoder_decoder=self.is_encoder_decoder))

    def check(self, *, text_chars: int, param: str, messages=None, prompt=None) -> int:
        """The prompt's token count; Refused when it leaves no room in the context."""
        if self.context is not None and text_chars > self.context * self.longest_token():
            raise Refused(400, f"This model's maximum context length is {self.context} tokens; the {param} has "
                               f"{text_chars} characters, far more than fit", param=param,
                          code="context_length_exceeded")
        tokens = self.count(messages=messages, prompt=prompt)
        if self.context is not None and tokens >= self.context:
            raise Refused(400, f"This model's maximum context length is {self.context} tokens; the {param} has "
                               f"{tokens} tokens, which leaves no room for a completion", param=param,
                          code="context_length_exceeded")
        return tokens

    def max_tokens(self, requested: int, prompt_tokens: int) -> int:
        """``requested`` capped by the server's limit and by what the context leaves after the prompt."""
        allowed = self.max_tokens_limit
        if self.context is not None and not self.is_encoder_decoder:
            allowed = min(allowed, self.context - prompt_tokens)
        return max(0, min(requested, allowed))


class Refused(Exception):
    """A request the server will not run; carries the HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, **fields: Any):
        super().__init__(message)
        self.status = status
        self.fields = fields

    def response(self):
        return error_response(self.status, str(self), **self.fields)


async def client_gone(receive) -> None:
    """Returns when the client of ``receive`` disconnects (never, without one)."""
    if receive is None:
        await asyncio.Event().wait()
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
