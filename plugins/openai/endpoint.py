"""The ``openai`` endpoint: any OpenAI-compatible API through the async ``openai`` SDK, with a streaming pool
of requests in flight (core/calls.py) whose limit adapts to the server's rate limits, our own retries (the
SDK's are off), budgets checked before each request, and token and cost accounting.

The API key is read from the environment on every call and handed to the SDK only: it is not kept on the
endpoint, not part of its identity (which keys the call cache), and scrubbed from every error we raise. The
same holds for credentials written into ``base_url`` (``http://user:key@host/v1``): they are sent, and
appear nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import os
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Coroutine, TypeVar
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from stillroom import BudgetExceeded, Completion, Endpoint, GenerationRequest, TokenLogprob, UserError
from stillroom.cache import redact_credentials, without_credentials
from stillroom.calls import InFlightLimit, PoolStopped, stream_pool
from stillroom.plugins.openai.backoff import MalformedResponse, is_retryable, retry_delay
from stillroom.plugins.openai.config import OpenAIEndpointConfig

if TYPE_CHECKING:
    import openai

R = TypeVar("R")
LOOPBACK_KEY = "sk-stillroom-loopback-no-key"
PER_MESSAGE_OVERHEAD = 8  # tokens a chat template adds around each message, for the worst-case cost


def is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion from synchronous code, also when the caller is inside a running event
    loop (a notebook, an async app): then it runs on a fresh loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(1, thread_name_prefix="stillroom-openai") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """One TLS context shared by every client we make: the SDK builds a fresh one per client, loading the CA
    bundle each time (~50 ms), and we make a client per call of generate."""
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)


def _http():
    """The HTTP library the SDK is built on (``httpx2`` for openai 3.x), imported lazily like the SDK."""
    import httpx2

    return httpx2


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret and len(secret) >= 4 else text


class OpenAIEndpoint(Endpoint):
    """Any OpenAI-compatible API (OpenAI, vLLM, `stillroom serve`) with bounded concurrency, retries that honour
    Retry-After, budgets, and token and cost accounting."""

    name = "openai"
    Config = OpenAIEndpointConfig
    config: OpenAIEndpointConfig

    def __init__(self, config: OpenAIEndpointConfig | None = None, context=None):
        super().__init__(config, context)
        self._lock = threading.Lock()
        self._limit: InFlightLimit | None = None  # the running call's pool
        self._learned_limit: float | None = None  # where the last call's adaptive limit ended
        self.peak_in_flight = 0  # the most requests this endpoint ever had in flight at once
        self._calls_sent = 0
        self._cost_committed = 0.0  # dollars spent plus the worst case of requests in flight
        self.stats.setdefault("failures", 0)

    # -- identity and secrets -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server's address without any credentials written into it."""
        return without_credentials(self.config.base_url).rstrip("/")

    @property
    def label(self) -> str:
        """Where errors point: the server and the model, never the key."""
        return f"endpoint openai {self.base_url} (model {self.config.model})"

    def identity(self) -> dict[str, Any]:
        return {"kind": "openai", "base_url": self.base_url, "model": self.config.model}

    def _api_key(self) -> str:
        key = os.environ.get(self.config.api_key_env)
        if key:
            return key
        if is_loopback(self.base_url):
            return LOOPBACK_KEY
        raise UserError(f"the environment variable {self.config.api_key_env} is not set; export your API key "
                        "there (or set api_key_env to the variable that holds it)", self.label)

    # -- budgets ----------------------------------------------------------------------------------------

    def worst_case_cost(self, request: GenerationRequest) -> float:
        """The most a request can cost: every prompt byte a token, plus max_tokens for each of n samples."""
        prices = self.config.prices
        if prices is None:
            return 0.0
        if request.messages is not None:
            prompt = sum(len((m.get("content") or "").encode()) + PER_MESSAGE_OVERHEAD for m in request.messages)
        else:
            prompt = len((request.prompt or "").encode())
        return prices.cost(prompt, request.max_tokens * request.n)

    def _reserve(self, worst: float) -> float:
        """Check the budgets before sending a request that may cost up to ``worst``; returns what is held."""
        config = self.config
        with self._lock:
            if config.budget_calls is not None and self._calls_sent + 1 > config.budget_calls:
                raise BudgetExceeded(f"budget_calls = {config.budget_calls} reached ({self._calls_sent} requests "
                                     "sent); the answers received are in the call cache; raise the budget to go on",
                                     self.label)
            if config.budget_cost is not None and self._cost_committed + worst > config.budget_cost:
                raise BudgetExceeded(f"budget_cost = ${config.budget_cost:g} would be exceeded: "
                                     f"${self._cost_committed:.6f} spent or in flight, the next request may cost up "
                                     f"to ${worst:.6f}; the answers received are in the call cache; raise the budget "
                                     "to go on", self.label)
            self._calls_sent += 1
            self._cost_committed += worst
            return worst

    def _settle(self, held: float, cost: float) -> None:
        with self._lock:
            self._cost_committed += cost - held
            self.stats["cost"] += cost

    # -- generation -------------------------------------------------------------------------------------
    #
    # One call of generate (or score) = one event loop, one AsyncOpenAI client and its connection pool, and one
    # streaming pool (stillroom.calls.stream_pool) that keeps up to the in-flight limit of requests going until
    # the work is done, handing each answer to the call cache as it arrives. A client cannot outlive its loop,
    # so calls do not share one; what they share is the learned in-flight limit.

    def _generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        answers: list[list[Completion] | None] = [None] * len(requests)

        def keep(index: int, completions: list[Completion]) -> None:
            answers[index] = completions

        self._generate_streaming(requests, keep)
        return answers  # type: ignore[return-value]

    def _generate_streaming(self, requests: list[GenerationRequest],
                            deliver: Callable[[int, list[Completion]], None]) -> None:
        async def answer(client: openai.AsyncOpenAI, key: str, index: int) -> list[Completion]:
            request = requests[index]
            return await self._with_retries(client, key, request.describe(),
                                            lambda c: self._call(c, request), worst_cost=self.worst_case_cost(request),
                                            tokens=self.request_tokens(request), cost_of=self._cost_of)

        self._run_pool(len(requests), answer, deliver)

    def _run_pool(self, count: int, answer: Callable[[Any, str, int], Awaitable[R]],
                  deliver: Callable[[int, R], None]) -> None:
        """Run ``answer(client, key, i)`` for i in ``range(count)`` on one loop and one client, up to the in-flight
        limit at once, and ``deliver(i, result)`` each result as it arrives. ``answer`` sends through
        :meth:`_with_retries`, which takes the in-flight slots, checks budgets and retries."""
        key = self._api_key()
        run_coroutine(lambda: self._pool(count, answer, deliver, key))

    async def _pool(self, count: int, answer, deliver, key: str) -> None:
        import openai  # imported here: loading the SDK costs half a second every `stillroom` command would pay

        config = self.config
        limit = InFlightLimit(config.concurrency, adaptive=config.adaptive_concurrency,
                              requests_per_minute=config.requests_per_minute,
                              tokens_per_minute=config.tokens_per_minute)
        limit.limit = min(limit.limit, self._learned_limit or limit.limit)
        self._limit = limit
        connections = openai.DefaultAsyncHttpxClient(
            verify=tls_context(), limits=_http().Limits(max_connections=config.concurrency,
                                                        max_keepalive_connections=config.concurrency))
        # The SDK's own retries are off: ours count them, honour Retry-After, adapt the in-flight limit and also
        # cover malformed answers.
        client = openai.AsyncOpenAI(base_url=config.base_url.rstrip("/"), api_key=key, max_retries=0, timeout=config.timeout,
                                    http_client=connections)
        try:
            await stream_pool(count, lambda index: answer(client, key, index), deliver, limit)
        finally:
            self._learned_limit = limit.limit
            # not in stats: those are counters that runs add up across processes
            self.peak_in_flight = max(self.peak_in_flight, limit.peak)
            await client.close()

    def request_tokens(self, request: GenerationRequest) -> int:
        """Tokens a request may use, for tokens_per_minute: prompt bytes / 4 plus max_tokens per sample."""
        if request.messages is not None:
            prompt = sum(len((m.get("content") or "").encode()) + 4 * PER_MESSAGE_OVERHEAD for m in request.messages)
        else:
            prompt = len((request.prompt or "").encode())
        return prompt // 4 + request.max_tokens * request.n

    def _cost_of(self, completions: list[Completion] | None) -> float:
        if not completions or self.config.prices is None:
            return 0.0
        prompt = sum(c.prompt_tokens for c in completions)
        completion = sum(c.completion_tokens for c in completions)
        return self.config.prices.cost(prompt, completion)

    async def _with_retries(self, client: openai.AsyncOpenAI, key: str, describe: str,
                            call: Callable[[Any], Awaitable[R]], *, worst_cost: float = 0.0, tokens: int = 0,
                            cost_of: Callable[[R], float] | None = None) -> R:
        """``await call(client)`` as one request: each attempt in an in-flight slot, the budgets checked before
        the first, retries with backoff (Retry-After honoured), the limit lowered on a 429. A UserError naming the
        endpoint and ``describe`` (never the key) when it cannot be done."""
        import openai

        limit = self._limit
        attempt = 0
        held: float | None = None
        try:
            while True:
                try:
                    async with limit.slot(tokens) as number:
                        if held is None:  # budgets count requests, not attempts
                            held = self._reserve(worst_cost)
                        try:
                            result = await call(client)
                        except openai.APIStatusError as exc:
                            if exc.status_code == 429:
                                limit.rate_limited(number)
                            raise
                        limit.succeeded()
                except (PoolStopped, BudgetExceeded):
                    raise
                except Exception as exc:
                    if not is_retryable(exc):
                        if isinstance(exc, openai.APIStatusError):
                            with self._lock:
                                self.stats["failures"] += 1
                            hint = ("; a chat model needs messages (stillroom generate: --chat)"
                                    if exc.status_code in (400, 404) and "/chat/" not in str(exc.request.url) else "")
                            raise UserError(f"request {describe} was refused: HTTP {exc.status_code}: "
                                            f"{self._reason(exc, key)}{hint}", self.label) from None
                        raise
                    if attempt >= self.config.max_retries:
                        with self._lock:
                            self.stats["failures"] += 1
                        raise UserError(f"request {describe} failed after {attempt} retries; last error: "
                                        f"{self._reason(exc, key)}", self.label) from None
                    delay = retry_delay(attempt, exc, self.config.backoff_base, self.config.backoff_max)
                    with self._lock:
                        self.stats["retries"] += 1
                    attempt += 1
                    await asyncio.sleep(delay)  # in no slot: other requests keep the pool full meanwhile
                    continue
                cost = cost_of(result) if cost_of is not None else 0.0
                self._settle(held, cost)
                held = None
                return result
        finally:
            if held is not None:  # failed or cancelled: nothing was spent
                self._settle(held, 0.0)

    def _reason(self, exc: Exception, key: str) -> str:
        import openai

        text = str(exc) or type(exc).__name__
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            inner = body.get("error") if isinstance(body.get("error"), dict) else body
            text = str(inner.get("message") or exc.message)
        for secret in (key, *self._url_secrets()):
            text = _redact(text, secret)
        text = " ".join(redact_credentials(text).split())
        return f"{type(exc).__name__}: {text[:300]}"

    def _url_secrets(self) -> list[str]:
        parts = urlsplit(self.config.base_url)
        return [s for s in (parts.password, parts.username) if s]

    async def _post(self, client: openai.AsyncOpenAI, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` and the decoded JSON answer. The SDK's typed ``create`` would walk every message through
        its type transformer and build response models we only take apart again: about 1 ms of CPU per request,
        which at concurrency 16 is most of the client's cost."""
        response = await client.post(path, body=body, cast_to=_http().Response)
        headers = response.headers
        if headers.get("x-ratelimit-remaining-requests") == "0" or headers.get("x-ratelimit-remaining-tokens") == "0":
            self._limit.rate_limited(self._limit.sent)  # the quota is spent: slow down before the 429s come
        return json.loads(response.content)

    async def _call(self, client: openai.AsyncOpenAI, request: GenerationRequest) -> list[Completion]:
        body: dict[str, Any] = {"model": self.config.model, "n": request.n, "temperature": request.temperature,
                                "top_p": request.top_p, "max_tokens": request.max_tokens}
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.messages is not None:
            body["messages"] = request.messages
            if request.logprobs:
                body["logprobs"] = True
                if request.top_logprobs:
                    body["top_logprobs"] = request.top_logprobs
            return self._parse(await self._post(client, "/chat/completions", body), request, chat=True)
        if request.prompt is None:
            raise UserError("a generation request needs messages or a prompt", self.label)
        body["prompt"] = request.prompt
        if request.logprobs:
            body["logprobs"] = request.top_logprobs
        return self._parse(await self._post(client, "/completions", body), request, chat=False)

    # -- prompt scoring (plugins/openai/scoring.py) ------------------------------------------------------

    can_score = True

    def score(self, sequences: list[list[int]], top_k: int) -> list[tuple[Any, Any]]:
        """Prompt scoring through vLLM's ``prompt_logprobs`` (vLLM, ``stillroom serve``), sequences sent as ids."""
        from stillroom.plugins.openai.scoring import score_sequences

        return score_sequences(self, sequences, top_k)

    # -- answers ----------------------------------------------------------------------------------------

    def _parse(self, response: Any, request: GenerationRequest, *, chat: bool) -> list[Completion]:
        """Completions from an SDK response; MalformedResponse (retried) when it is not a usable answer."""
        choices = _field(response, "choices") if not isinstance(response, (str, bytes)) else None
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse(f"the server's answer has no choices: {str(response)[:120]!r}")
        if len(choices) != request.n:
            raise MalformedResponse(f"the server returned {len(choices)} choices for n={request.n}")
        choices = sorted(choices, key=lambda c: _field(c, "index") or 0)
        texts, token_lists, reasons = [], [], []
        for choice in choices:
            if chat:
                message = _field(choice, "message")
                if message is None:
                    raise MalformedResponse("a chat choice without a message")
                text = _field(message, "content")
            else:
                text = _field(choice, "text")
            if text is not None and not isinstance(text, str):
                raise MalformedResponse(f"a choice's text is {type(text).__name__}, not a string")
            texts.append(text or "")
            reasons.append(_field(choice, "finish_reason"))
            try:
                token_lists.append(self._tokens(_field(choice, "logprobs"), chat) if request.logprobs else None)
            except (TypeError, ValueError) as exc:
                raise MalformedResponse(f"unreadable logprobs: {exc}") from None
        usage = _field(response, "usage")
        prompt_tokens = int(_field(usage, "prompt_tokens") or 0) if usage is not None else 0
        completion_total = int(_field(usage, "completion_tokens") or 0) if usage is not None else 0
        if usage is None and all(t is not None for t in token_lists):
            completion_total = sum(len(t) for t in token_lists)  # type: ignore[arg-type]
        shares = self._split(completion_total, token_lists)
        # The prompt is billed once per request: it goes on the first sample so sums over samples are right.
        return [Completion(text=text, finish_reason=reason, tokens=tokens,
                           prompt_tokens=prompt_tokens if i == 0 else 0, completion_tokens=share)
                for i, (text, reason, tokens, share) in enumerate(zip(texts, reasons, token_lists, shares))]

    @staticmethod
    def _split(total: int, token_lists: list[list[TokenLogprob] | None]) -> list[int]:
        """Per-sample completion tokens adding up to the reported total: by logprob token counts when known."""
        counts = [len(t) for t in token_lists if t is not None]
        if len(counts) == len(token_lists) and sum(counts) == total:
            return counts
        n = len(token_lists)
        share, rest = divmod(total, n)
        return [share + (1 if i < rest else 0) for i in range(n)]

    @staticmethod
    def _tokens(logprobs: Any, chat: bool) -> list[TokenLogprob] | None:
        if logprobs is None:
            return None
        if chat:
            content = _field(logprobs, "content")
            if content is None:
                return None
            return [TokenLogprob(token=_field(item, "token"), logprob=float(_field(item, "logprob")),
                                 top=[(_field(alt, "token"), float(_field(alt, "logprob")))
                                      for alt in (_field(item, "top_logprobs") or [])])
                    for item in content]
        tokens = _field(logprobs, "tokens")
        values = _field(logprobs, "token_logprobs")
        if tokens is None or values is None:
            return None
        tops = _field(logprobs, "top_logprobs") or [None] * len(tokens)
        return [TokenLogprob(token=token, logprob=float(value if value is not None else 0.0),
                             top=sorted(((t, float(v)) for t, v in (top or {}).items()), key=lambda p: -p[1]))
                for token, value, top in zip(tokens, values, tops)]
