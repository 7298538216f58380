"""The fault-injection server itself: each fault looks on the wire like the real thing, answers do not depend on
faults, the fault pattern depends only on the seed, and /stats counts what happened."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from stillroom.testing.fault_server import FAULTS, start_fault_server

CHAT = {"model": "m", "messages": [{"role": "user", "content": "two plus two"}]}


def test_health_models_and_a_clean_answer(servers):
    server = servers()
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.base_url + "/models").json()["data"][0]["id"] == "fault-model"
    body = httpx.post(server.base_url + "/chat/completions", json={**CHAT, "n": 2, "max_tokens": 3}).json()
    assert [c["message"]["content"] for c in body["choices"]] == ["echo: two plus", "echo: two plus"]
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "length"]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
    text = httpx.post(server.base_url + "/completions", json={"model": "m", "prompt": "a b", "logprobs": 2}).json()
    choice = text["choices"][0]
    assert choice["text"] == "echo: a b"
    assert choice["logprobs"]["tokens"] == ["echo:", " a", " b"]
    assert all(len(top) == 2 for top in choice["logprobs"]["top_logprobs"])
    stats = server.stats()
    assert stats["requests"] == 2 and stats["ok"] == 2 and sum(stats["faults"].values()) == 0


@pytest.mark.parametrize("fault", ["429", "500", "drop", "truncated", "garbage"])
def test_each_fault_on_the_wire(servers, fault):
    server = servers(first_fault=fault, retry_after="3")
    url = server.base_url + "/chat/completions"
    if fault == "drop":
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(url, json=CHAT)
    else:
        response = httpx.post(url, json=CHAT)
        if fault == "429":
            assert response.status_code == 429 and response.headers["retry-after"] == "3"
        elif fault == "500":
            assert response.status_code == 500 and "error" in response.json()
        elif fault == "truncated":
            assert response.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(response.text)
        else:
            assert response.status_code == 200 and response.headers["content-type"] == "text/html"
    # the second attempt of the same request is answered, with the fault-free answer
    second = httpx.post(url, json=CHAT)
    assert second.json()["choices"][0]["message"]["content"] == "echo: two plus two"
    stats = server.stats()
    assert stats["faults"][fault] == 1 and stats["requests"] == 2 and stats["ok"] == 1


def test_slow_answer_is_late_but_correct(servers):
    server = servers(first_fault="slow", slow_ms=400)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/chat/completions", json=CHAT, timeout=0.1)
    response = httpx.post(server.base_url + "/chat/completions", json=CHAT, timeout=5)
    assert response.json()["choices"][0]["message"]["content"] == "echo: two plus two"
    assert server.stats()["faults"]["slow"] == 1


def test_fault_pattern_depends_on_seed_only_and_reset(servers):
    options = {f"rate_{f}": 0.1 for f in ("429", "500", "truncated", "garbage")}
    first, other = servers(seed=3, **options), servers(seed=4, **options)
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(40)]

    def pattern(server):
        with httpx.Client() as client:  # one client: building one per request costs ~50 ms (its SSL context)
            return [client.post(server.base_url + "/chat/completions", json=b).status_code for b in bodies]

    seen = pattern(first)
    assert seen != pattern(other)
    stats = first.stats()
    assert stats["faults"]["429"] == seen.count(429) > 0
    assert stats["faults"]["500"] == seen.count(500) > 0
    assert stats["ok"] == seen.count(200) - stats["faults"]["truncated"] - stats["faults"]["garbage"]
    assert first.reset() == {"reset": True}
    assert first.stats()["requests"] == 0
    # after a reset every body counts as new again, so the same seed repeats the pattern exactly
    assert pattern(first) == seen


def test_max_in_flight_and_unknown_options(servers):
    import concurrent.futures

    server = servers(delay_ms=300)
    with httpx.Client(timeout=10) as client, concurrent.futures.ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda i: client.post(server.base_url + "/completions", json={"model": "m", "prompt": str(i)}),
                      range(5)))
    assert server.stats()["max_in_flight"] == 5
    with pytest.raises(TypeError, match="unknown fault server options"):
        start_fault_server(rate_teapot=1.0)
    assert set(FAULTS) == set(server.stats()["faults"])


def test_heavy_tailed_latency_is_log_normal_and_the_same_for_every_client():
    from stillroom.testing.fault_server import FaultOptions, latency_s

    options = FaultOptions(latency_median_ms=200, latency_p99_ms=5000, delay_ms=10)
    draws = sorted(latency_s(options, f"body {i}".encode()) for i in range(4000))
    assert 0.18 < draws[2000] < 0.24  # median ~200 ms (+10 ms fixed)
    assert 0.005 < sum(d > 5.0 for d in draws) / len(draws) < 0.02  # about 1% over 5 s
    assert latency_s(options, b"same body") == latency_s(options, b"same body")
    assert latency_s(FaultOptions(delay_ms=100), b"x") == 0.1


def test_limit_in_flight_answers_429_beyond_it_and_hold_waits_for_release(servers):
    import concurrent.futures

    server = servers(delay_ms=200, max_in_flight=2, limit_retry_after="0.25", hold_after=1)
    body = {"model": "m", "prompt": "first"}
    assert httpx.post(server.base_url + "/completions", json=body).status_code == 200  # the one let through
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        held = [pool.submit(httpx.post, server.base_url + "/completions", json={"model": "m", "prompt": str(i)},
                            timeout=10) for i in range(2)]
        deadline = time.monotonic() + 10
        while server.stats()["held"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        over = httpx.post(server.base_url + "/completions", json={"model": "m", "prompt": "third"})
        assert over.status_code == 429 and over.headers["retry-after"] == "0.25"
        assert server.stats()["ok"] == 1  # the two are held
        server.release()
        assert [f.result().status_code for f in held] == [200, 200]
    stats = server.stats()
    assert stats["limited"] == 1 and stats["max_in_flight"] == 2 and stats["answered_distinct"] == 3
    timeline = server.timeline()
    assert max(count for _, count, _ in timeline) == 2 and timeline[-1][1] == 0
