"""The pieces of core/calls.py and core/cache.py behind the streaming pool, without a network: the AIMD
in-flight limit, the pool itself (no barriers, stops on the first failure, keeps what finished), the cache
writer, and URL credentials stripped from labels."""

from __future__ import annotations

import asyncio
import time

import pytest

from stillroom.cache import CacheWriter, CallCache, endpoint_label, redact_credentials, without_credentials
from stillroom.calls import InFlightLimit, PoolStopped, stream_pool


def test_limit_decreases_once_per_round_and_grows_back_additively():
    async def scenario():
        limit = InFlightLimit(16)
        numbers = [await limit.acquire() for _ in range(16)]
        assert limit.in_flight == 16 and limit.peak == 16
        for number in numbers[:8]:  # eight 429s from one round: one decrease, not eight
            limit.rate_limited(number)
            limit.release()
        assert limit.current == 12 and limit.decreases == 1
        fresh = await limit.acquire()  # sent after the decrease: its 429 is news
        limit.rate_limited(fresh)
        assert limit.current == 9 and limit.decreases == 2
        limit.release()
        for _ in range(200):
            limit.succeeded()
        assert limit.current == 16  # additive increase, capped at the maximum
        floor = InFlightLimit(2)
        for _ in range(10):
            floor.rate_limited(await floor.acquire())
            floor.release()
        assert floor.current == 1  # never below one
        fixed = InFlightLimit(4, adaptive=False)
        fixed.rate_limited(await fixed.acquire())
        assert fixed.current == 4

    asyncio.run(scenario())


def test_pool_keeps_the_limit_in_flight_without_barriers():
    """One slow request does not hold the others back: the rest finish around it, in flight never above 4."""
    seen: list[int] = []

    async def scenario():
        limit = InFlightLimit(4)
        order: list[int] = []

        async def answer(index: int) -> str:
            async with limit.slot():
                seen.append(limit.in_flight)
                await asyncio.sleep(0.3 if index == 0 else 0.01)
                return f"answer {index}"

        started = time.perf_counter()
        await stream_pool(40, answer, lambda i, r: order.append(i), limit)
        return order, time.perf_counter() - started

    order, wall = asyncio.run(scenario())
    assert sorted(order) == list(range(40)) and order[-1] == 0  # the slow one came last, nothing waited on it
    assert max(seen) == 4 and wall < 0.3 + 0.2  # 39 fast requests on 3 slots took < 0.2 s beside the slow one


def test_pool_stops_on_the_first_failure_and_delivers_what_finished():
    delivered: list[int] = []
    started: list[int] = []

    async def scenario():
        limit = InFlightLimit(2)

        async def answer(index: int) -> int:
            async with limit.slot():
                started.append(index)
                await asyncio.sleep(0.01)
                if index == 3:
                    raise ValueError("request 3 failed")
                return index

        await stream_pool(50, answer, lambda i, r: delivered.append(r), limit)

    with pytest.raises(ValueError, match="request 3 failed"):
        asyncio.run(scenario())
    assert 3 not in delivered and set(delivered) == set(started) - {3}
    assert len(started) <= 6  # nothing new was sent after the failure


def test_stopped_limit_refuses_new_sends():
    async def scenario():
        limit = InFlightLimit(1)
        await limit.acquire()
        waiting = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        limit.stop(RuntimeError("stop"))
        with pytest.raises(PoolStopped):
            await waiting

    asyncio.run(scenario())


def test_cache_writer_commits_in_batches_and_close_flushes(tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    writer = CacheWriter(cache, interval=0.05)
    writer.put([("k0", "label", {"text": "a"})])
    deadline = time.monotonic() + 5
    while cache.get("k0") is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cache.get("k0") == {"text": "a"}  # on disk soon after arriving, without close
    for i in range(1, 200):
        writer.put([(f"k{i}", "label", {"text": str(i)})])
    writer.close()
    assert cache.stats()["entries"] == 200


def test_url_credentials_are_stripped():
    assert without_credentials("https://user:sk-secret@api.example.com/v1") == "https://api.example.com/v1"
    assert without_credentials("http://sk-secret@127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert without_credentials("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert "sk-secret" not in redact_credentials("calling http://u:sk-secret@h/v1 failed; see https://x:y@z")
    assert "sk-secret" not in endpoint_label({"base_url": "http://u:sk-secret@h/v1", "model": "m"})
