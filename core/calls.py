"""Every model call goes through here: cache lookup, the calls themselves, storing each answer the moment it
arrives (so an interrupted run keeps every answer it paid for), and accounting.

An endpoint answers cache misses in one of two ways, both behind :func:`generate_through_cache`:

- in batches (in-process models such as ``hf``): ``Endpoint._generate`` on chunks of ``chunk_size`` requests,
  each chunk's answers stored as it finishes (:func:`generate_in_chunks`, the default);
- as a stream (endpoints that talk to a server): :func:`stream_pool` keeps up to an :class:`InFlightLimit` of
  requests in flight at every moment until the work is done, with no barrier between requests, and hands each
  answer over as it arrives. The limit adapts to the server (AIMD on rate limits) and can pace requests and
  tokens per minute.

Answers reach SQLite through a :class:`~stillroom.cache.CacheWriter` thread, so the event loop never waits on a
commit. Nothing here knows a provider: an endpoint says what a rate limit looks like by calling
:meth:`InFlightLimit.rate_limited`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

from stillroom.cache import CacheWriter, call_key, endpoint_label
from stillroom.progress import progress_bar

if TYPE_CHECKING:
    from stillroom.roles import Completion, Endpoint, GenerationRequest

T = TypeVar("T")
# deliver(position, completions): the answer to the position-th request handed to the endpoint, in any order
Deliver = Callable[[int, "list[Completion]"], None]


def request_keys(identity: dict, request: "GenerationRequest") -> list[str]:
    body = request.model_dump(exclude={"n"})
    return [call_key(identity, body, i) for i in range(request.n)]


def generate_through_cache(endpoint: "Endpoint", requests: list["GenerationRequest"], *,
                           description: str | None = None) -> list[list["Completion"]]:
    from stillroom.roles import Completion

    cache = endpoint.context.cache
    stats = endpoint.stats
    identity = endpoint.identity()  # once per call: an hf endpoint hashes its weights for it
    keys = [request_keys(identity, r) for r in requests]
    found = cache.get_many([k for ks in keys for k in ks]) if cache is not None else {}
    results: list[list[Completion] | None] = [None] * len(requests)
    missing: list[int] = []
    for index, ks in enumerate(keys):
        if all(k in found for k in ks):
            results[index] = [Completion.model_validate(found[k]) for k in ks]
            stats["cache_hits"] += 1
            # a cached answer is still used: its tokens count towards what the method consumed (not paid)
            stats["cached_tokens"] = stats.get("cached_tokens", 0) + sum(
                c.prompt_tokens + c.completion_tokens for c in results[index])
        else:
            missing.append(index)
    if not missing:
        return results  # type: ignore[return-value]

    label = endpoint_label(identity)
    writer = CacheWriter(cache) if cache is not None else None
    with progress_bar(description or f"{endpoint.name} calls", total=len(missing),
                      enabled=endpoint.context.progress and len(missing) > 8) as advance:

        def deliver(position: int, completions: list[Completion]) -> None:
            index = missing[position]
            if results[index] is not None:
                return  # an endpoint that delivers twice must not count or store twice
            if len(completions) != requests[index].n:
                raise RuntimeError(f"{endpoint.name}: {len(completions)} completions for a request with "
                                   f"n={requests[index].n}")
            results[index] = completions
            stats["requests"] += 1
            rows = []
            for key, completion in zip(keys[index], completions):
                stats["prompt_tokens"] += completion.prompt_tokens
                stats["completion_tokens"] += completion.completion_tokens
                rows.append((key, label, completion.model_dump()))
            if writer is not None:
                writer.put(rows)
            advance(1)

        failed = True
        try:
            endpoint._generate_streaming([requests[i] for i in missing], deliver)
            failed = False
        finally:
            if writer is not None:
                try:
                    writer.close()  # every delivered answer is committed before an error or Ctrl-C goes on
                except Exception:
                    if not failed:
                        raise  # a failed commit (full disk) matters unless another error is already on its way
    unanswered = sum(1 for i in missing if results[i] is None)
    if unanswered:
        raise RuntimeError(f"{endpoint.name}: {unanswered} of {len(missing)} requests got no answer")
    return results  # type: ignore[return-value]


def generate_in_chunks(endpoint: "Endpoint", requests: list["GenerationRequest"], deliver: Deliver) -> None:
    """The default way to answer: ``_generate`` on chunks of ``endpoint.chunk_size`` (64) requests, each chunk's
    answers delivered when it finishes (a failing chunk loses only its own answers: earlier chunks are kept)."""
    chunk = max(1, int(endpoint.chunk_size))
    for start in range(0, len(requests), chunk):
        part = requests[start:start + chunk]
        answers = endpoint._generate(part)
        if len(answers) != len(part):
            raise RuntimeError(f"{endpoint.name}: _generate returned {len(answers)} answers for {len(part)} requests")
        for offset, completions in enumerate(answers):
            deliver(start + offset, completions)


# ---------------------------------------------------------------------------------------------------------
# The streaming pool.


class PoolStopped(Exception):
    """Raised by :meth:`InFlightLimit.acquire` once the pool has stopped sending (another request failed)."""


class InFlightLimit:
    """How many requests may be in flight at once, adapted to the server: additive increase, multiplicative
    decrease (AIMD, as TCP does) between 1 and ``maximum``.

    :meth:`rate_limited` (a 429, or a header saying the quota is spent) multiplies the limit by ``DECREASE``,
    once per round of requests: requests sent before the last decrease were sent under the old limit, so their
    429s say nothing new. :meth:`succeeded` adds ``1 / limit``, about one more request in flight per round of
    successes. A factor of 0.75 rather than TCP Reno's 0.5 (CUBIC uses 0.7): against a server that allows k in
    flight the limit saws between 0.75k and k + 1, using about 90% of what is allowed instead of 75%.
    ``requests_per_minute`` and ``tokens_per_minute`` space sends evenly for providers that publish quotas.
    One instance belongs to one event loop; nothing here is thread-safe.
    """

    DECREASE = 0.75

    def __init__(self, maximum: int, *, adaptive: bool = True, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None):
        self.maximum = max(1, int(maximum))
        self.adaptive = adaptive
        self.limit = float(self.maximum)
        self.in_flight = 0
        self.peak = 0  # the most in flight at once, for tests and reports
        self.decreases = 0
        self._sent = 0  # sequence number of the last send
        self._sent_at_decrease = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._request_gap = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._token_gap = 60.0 / tokens_per_minute if tokens_per_minute else 0.0
        self._next_send = 0.0
        self._stopped: BaseException | None = None

    @property
    def sent(self) -> int:
        """How many sends have started; :meth:`rate_limited` with it means "as of now"."""
        return self._sent

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    def stop(self, reason: BaseException) -> None:
        """Refuse every later :meth:`acquire` (with :class:`PoolStopped`); requests in flight finish."""
        self._stopped = reason
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def acquire(self, tokens: int = 0) -> int:
        """Wait for a free slot (first come, first served) and for the pace; returns the send's number."""
        if self._stopped is not None:
            raise PoolStopped()
        if self.in_flight >= self.current or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                while True:
                    await waiter
                    if self._stopped is not None:
                        raise PoolStopped()
                    if self.in_flight < self.current:
                        break
                    waiter = asyncio.get_running_loop().create_future()  # woken but the limit fell meanwhile
                    self._waiters.appendleft(waiter)
            except BaseException:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                self._wake()
                raise
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self._sent += 1
        number = self._sent
        gap = self._request_gap + self._token_gap * max(0, tokens)
        if gap:
            now = time.monotonic()
            at = max(now, self._next_send)
            self._next_send = at + gap
            if at > now:
                try:
                    await asyncio.sleep(at - now)
                except BaseException:
                    self.release()
                    raise
        return number

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.current - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int = 0):
        """``async with limit.slot() as number:`` one request in flight; ``number`` goes to :meth:`rate_limited`."""
        number = await self.acquire(tokens)
        try:
            yield number
        finally:
            self.release()

    def rate_limited(self, number: int) -> None:
        """The send numbered ``number`` met a rate limit: lower the limit, once per round of requests."""
        if not self.adaptive or number <= self._sent_at_decrease:
            return
        self.limit = max(1.0, self.limit * self.DECREASE)
        self._sent_at_decrease = self._sent
        self.decreases += 1

    def succeeded(self) -> None:
        if self.adaptive and self.limit < self.maximum:
            before = self.current
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            if self.current > before:
                self._wake()


async def stream_pool(count: int, answer: Callable[[int], Awaitable[T]], deliver: Callable[[int, T], None],
                      limit: InFlightLimit) -> None:
    """Run ``answer(i)`` for i in ``range(count)`` and ``deliver(i, result)`` as each finishes, in any order.

    ``answer`` takes a slot of ``limit`` for each attempt it sends (``async with limit.slot():``), so a request
    waiting to retry holds no slot. At most ``limit.maximum`` requests are under way at once (not a coroutine
    per request of a 450K-call job): while the adaptive limit is below its maximum, requests waiting out a
    backoff leave their slots to others; at the maximum, a request waiting to retry keeps its place, so a
    failing server is not sent more than ``concurrency`` distinct requests before the first one gives up. The
    first failure stops new sends; requests in flight finish and are delivered; then it is raised.
    """
    ahead = limit.maximum
    next_index = 0
    running: set[asyncio.Task] = set()
    positions: dict[asyncio.Task, int] = {}
    error: BaseException | None = None
    try:
        while True:
            while error is None and next_index < count and len(running) < ahead:
                task = asyncio.ensure_future(answer(next_index))
                positions[task] = next_index
                running.add(task)
                next_index += 1
            if not running:
                break
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                position = positions.pop(task)
                exc = task.exception()
                if exc is None:
                    deliver(position, task.result())
                elif not isinstance(exc, PoolStopped) and error is None:
                    error = exc
                    limit.stop(exc)
    finally:
        for task in running:  # Ctrl-C or a failing deliver: nothing may keep sending behind our back
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if error is not None:
        raise error
