"""`stillroom serve` under requests meant to take the machine (issue 22), measured on a real server process.

One server (max batch 16, 8 s request timeout) takes the size, context, max_tokens, model-name, error-shape and
disconnect cases; a second one (0.5 s request timeout) the timeout and SIGTERM cases. Time and memory are
measured: a 20 MB body is refused in under a second without the server's memory growing, and SIGTERM during a
long generation ends the process in about two seconds. A batch already generating stops when every request in
it is cancelled (client gone, timed out, shutdown); a partly cancelled batch finishes its other rows as if
nothing happened (checked on the Batcher in process). Timings are loose bounds for a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from relkit import cli_env, free_port
from stillroom.testing import stillroom_command

CONTEXT = 2048  # the tiny model's max_position_embeddings (stillroom.testing.tiny_llama; checked below)
# Sixteen greedy rows of 1900 tokens: the tiny random model falls into loops and never says EOS, so this runs
# its full length, about 18 s on one idle core; anything that answers within a few seconds was stopped.
LONG_BATCH = {"model": "tiny", "prompt": [f"story {i}: once upon a time" for i in range(16)], "max_tokens": 1900,
              "temperature": 0}


@contextmanager
def servers(model: Path, root: Path, *option_sets: tuple[str, ...]):
    """One `stillroom serve` per option set, started together on free ports: yields [(base URL, Popen), ...];
    each stopped by PID at the end (SIGKILL if still alive)."""
    started = []
    try:
        for options in option_sets:
            port = free_port()
            log = root / f"serve-{port}.log"
            process = subprocess.Popen([*stillroom_command(), "serve", str(model), "--port", str(port), "--name",
                                        "tiny", "--device", "cpu", *options], env=cli_env(root),
                                       stdout=log.open("w"), stderr=subprocess.STDOUT)
            started.append((f"http://127.0.0.1:{port}", process, log))
        deadline = time.monotonic() + 120
        for url, process, log in started:
            while True:
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        yield [(url, process) for url, process, _ in started]
    finally:
        for _, process, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def openai_error(response: httpx.Response) -> dict:
    """The OpenAI error object of a response, checked for its shape (never FastAPI's {"detail": ...})."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.fixture(scope="module")
def both(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-limits")
    with servers(tiny_model_dir, root, ("--max-batch", "16", "--request-timeout", "8", "--max-body-mb", "4"),
                 ("--max-batch", "16", "--request-timeout", "0.5")) as found:
        yield found


@pytest.fixture(scope="module")
def served(both, tiny_model_dir):
    assert json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"] == CONTEXT
    return both[0]


def test_a_20_mb_body_is_refused_fast_without_memory_growth(served):
    url, process = served
    before = rss_mb(process.pid)
    body = json.dumps({"model": "tiny", "prompt": "word " * 4_000_000}).encode()  # 20 MB
    started = time.monotonic()
    response = httpx.post(url + "/v1/completions", content=body, headers={"content-type": "application/json"},
                          timeout=30)
    declared = time.monotonic() - started

    def chunks():  # the same body without a Content-Length: counted as it arrives
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]

    started = time.monotonic()
    try:
        streamed = httpx.post(url + "/v1/completions", content=chunks(), headers={"content-type": "application/json"},
                              timeout=30)
        streamed_status = streamed.status_code
        streamed_error = openai_error(streamed)
    except httpx.HTTPError:  # the server may close the connection while the rest is still being sent
        streamed_status, streamed_error = 413, {"code": "request_too_large"}
    chunked = time.monotonic() - started
    after = rss_mb(process.pid)
    assert response.status_code == 413 and openai_error(response)["code"] == "request_too_large"
    assert streamed_status == 413 and streamed_error["code"] in ("request_too_large", None)
    assert declared < 1.0 and chunked < 2.0, (declared, chunked)
    assert after - before < 100, f"RSS grew from {before:.0f} MB to {after:.0f} MB"
    assert httpx.get(url + "/health").status_code == 200


@pytest.mark.parametrize("route,payload,param", [
    ("/v1/completions", {"prompt": "word " * (50 * CONTEXT)}, "prompt"),
    ("/v1/completions", {"prompt": "hello " * (2 * CONTEXT)}, "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * (50 * CONTEXT)}]}, "messages"),
    ("/v1/completions", {"prompt": list(range(3)) * CONTEXT}, "prompt"),
])
def test_a_prompt_beyond_the_context_is_a_400(served, route, payload, param):
    url, _ = served
    started = time.monotonic()
    response = httpx.post(url + route, json={"model": "tiny", "max_tokens": 4, **payload}, timeout=30)
    assert response.status_code == 400, response.text
    error = openai_error(response)
    assert error["code"] == "context_length_exceeded" and error["param"] == param and str(CONTEXT) in error["message"]
    assert time.monotonic() - started < 2.0


def test_huge_max_tokens_is_capped_and_a_small_request_still_answers(served):
    url, _ = served

    async def both():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            big = asyncio.create_task(client.post("/v1/completions", json={
                "model": "tiny", "prompt": "Once upon a time", "max_tokens": 10 ** 9, "temperature": 0}))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            small = await client.post("/v1/chat/completions", json={
                "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
            return await big, small, time.monotonic() - started

    big, small, small_seconds = asyncio.run(both())
    assert big.status_code == 200 and small.status_code == 200, (big.text, small.text)
    usage = big.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= CONTEXT
    assert small.json()["usage"]["completion_tokens"] <= 3 and small_seconds < 8.0


def test_many_prompts_are_generated_in_parts_and_a_small_request_goes_between(served):
    """64 prompts in one request are four batches of 16; a short request sent while the first batch runs is
    answered before the long one ends, and the long one's choices come back complete and in order."""
    url, _ = served
    before = httpx.get(url + "/stats").json()

    async def both():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            finished = {}

            async def post(key, route, body):
                response = await client.post(route, json=body)
                finished[key] = time.monotonic()
                return response

            many = asyncio.create_task(post("many", "/v1/completions", {
                "model": "tiny", "prompt": [f"prompt {i}" for i in range(64)], "max_tokens": 64, "temperature": 0}))
            while True:  # the first part is generating and the rest waits
                stats = (await client.get("/stats")).json()
                if stats["batches"] > before["batches"] and stats["waiting"] >= 1 or many.done():
                    break
                await asyncio.sleep(0.01)
            small = await post("small", "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 2})
            return await many, small, finished

    many, small, finished = asyncio.run(both())
    assert many.status_code == 200 and small.status_code == 200, (many.text, small.text)
    assert [c["index"] for c in many.json()["choices"]] == list(range(64))
    assert finished["small"] < finished["many"]
    after = httpx.get(url + "/stats").json()
    assert after["batches"] - before["batches"] == 5 and after["sequences"] - before["sequences"] == 65


def test_unknown_model_route_and_bad_json_are_openai_errors(served):
    url, _ = served
    unknown = httpx.post(url + "/v1/chat/completions", json={"model": "gpt-5", "messages": [
        {"role": "user", "content": "hi"}]})
    assert unknown.status_code == 404 and openai_error(unknown)["code"] == "model_not_found"
    assert "gpt-5" in openai_error(unknown)["message"]
    route = httpx.get(url + "/v1/nothing")
    assert route.status_code == 404 and openai_error(route)["type"] == "invalid_request_error"
    method = httpx.get(url + "/v1/completions")
    assert method.status_code == 405 and openai_error(method)
    broken = httpx.post(url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and openai_error(broken)
    invalid = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "x", "n": 10_000})
    assert invalid.status_code == 400 and openai_error(invalid)["param"] == "n"


def test_a_disconnected_client_is_dropped_from_the_queue(served):
    """A request whose client left before its turn is never generated: /stats counts it as cancelled."""
    url, _ = served
    before = httpx.get(url + "/stats").json()

    async def scenario():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            busy = asyncio.create_task(client.post("/v1/completions", json={
                "model": "tiny", "prompt": "hi", "max_tokens": 400, "n": 32, "temperature": 1}))
            await asyncio.sleep(0.3)
            with pytest.raises(httpx.TimeoutException):
                await client.post("/v1/completions", json={"model": "tiny", "prompt": "bye", "max_tokens": 5},
                                  timeout=0.3)
            await asyncio.sleep(0.5)
            return await busy

    busy = asyncio.run(scenario())
    assert busy.status_code == 200
    after = httpx.get(url + "/stats").json()
    assert after["cancelled"] - before["cancelled"] == 1, (before, after)
    assert after["sequences"] - before["sequences"] == 32, "the abandoned request was generated"


def test_a_disconnected_client_stops_its_running_batch(served):
    """A client that sends a long generation and leaves: the batch stops at once (within a token), so a small
    request sent next is answered in seconds instead of after the ~18 s the batch would run (or the 8 s request
    timeout); /stats counts the batch as stopped and its 16 completions as cancelled."""
    url, _ = served
    before = httpx.get(url + "/stats").json()

    async def scenario():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            with pytest.raises(httpx.TimeoutException):
                await client.post("/v1/completions", json=LONG_BATCH, timeout=1.0)  # gives up: connection closed
            left = time.monotonic()
            small = await client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 3})
            return small, time.monotonic() - left

    small, seconds = asyncio.run(scenario())
    assert small.status_code == 200 and small.json()["usage"]["completion_tokens"] <= 3, small.text
    assert seconds < 4.0, f"the next request waited {seconds:.1f} s: the abandoned batch kept generating"
    after = httpx.get(url + "/stats").json()
    assert after["stopped_batches"] - before["stopped_batches"] == 1, (before, after)
    assert after["cancelled_sequences"] - before["cancelled_sequences"] == 16, (before, after)
    assert after["cancelled"] - before["cancelled"] == 1, (before, after)


def test_a_partly_cancelled_batch_finishes_its_other_rows(tiny_model_dir):
    """The Batcher over the real endpoint, in process: a long request and a short one share one batch; the long
    one is cancelled while both generate. Its rows end early ("cancelled"), the short one's answer is exactly
    what it gets alone, and the batch ends with the short row instead of running the long rows' 1900 tokens."""
    from stillroom import Context, GenerationRequest
    from stillroom.plugins.hf.endpoint import HFEndpoint
    from stillroom.plugins.hf.serve import Batcher

    endpoint = HFEndpoint(HFEndpoint.Config(model=str(tiny_model_dir), device="cpu", batch_size=16),
                          Context(cache=None, progress=False))
    long = [GenerationRequest(prompt=p, max_tokens=1900, temperature=0.0) for p in LONG_BATCH["prompt"][:8]]
    short = [GenerationRequest(prompt="a short one", max_tokens=300, temperature=0.0)]

    async def scenario():
        batcher = Batcher(endpoint, max_batch=16, wait_s=0.2)  # both tickets arrive inside one window
        batcher.arrived, batcher.loop = asyncio.Event(), asyncio.get_running_loop()
        worker = asyncio.create_task(batcher.run())
        try:
            started = time.monotonic()
            abandoned, kept = batcher.enqueue(long), batcher.enqueue(short)
            while batcher.batches == 0:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # both generating
            batcher.cancel(abandoned)
            together = (await kept.future)[0][0]
            seconds = time.monotonic() - started
            cut = await abandoned.future  # the cancelled ticket is still filled, with its cut rows
            alone = (await batcher.submit(short))[0][0]
            return batcher, together, cut, alone, seconds
        finally:
            worker.cancel()

    batcher, together, cut, alone, seconds = asyncio.run(scenario())
    assert batcher.batches == 2 and batcher.cancelled == 1 and batcher.stopped_batches == 0
    assert batcher.cancelled_sequences == 8
    assert all(c.finish_reason == "cancelled" and c.completion_tokens < 1900 for (c,) in cut), cut
    assert together.finish_reason == "length" and together.completion_tokens == 300
    assert together.text == alone.text and together.completion_tokens == alone.completion_tokens
    assert seconds < 8.0, seconds


def test_request_timeout_and_sigterm(both):
    """With --request-timeout 0.5 a long batch gets a 504 and stops generating (a small request sent next is
    answered at once; /stats counts the stopped batch); SIGTERM during a long generation ends the process in
    about 2 s, answering the open request with a 503."""
    url, process = both[1]
    before = httpx.get(url + "/stats").json()

    async def scenario():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            started = time.monotonic()
            long = await client.post("/v1/completions", json=LONG_BATCH)
            timed_out = time.monotonic() - started
            started = time.monotonic()
            small = await client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2})
            return long, timed_out, small, time.monotonic() - started

    long, timed_out, small, waited = asyncio.run(scenario())
    assert long.status_code == 504 and openai_error(long)["code"] == "timeout" and timed_out < 3.0, long.text
    assert small.status_code == 200 and waited < 2.0, (small.text, waited)
    after = httpx.get(url + "/stats").json()
    assert after["stopped_batches"] - before["stopped_batches"] == 1, (before, after)

    async def stop():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            open_request = asyncio.create_task(client.post("/v1/completions", json=LONG_BATCH))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            os.kill(process.pid, signal.SIGTERM)
            while process.poll() is None and time.monotonic() - started < 15:
                await asyncio.sleep(0.05)
            stopped = time.monotonic() - started
            try:
                answer = await open_request
            except httpx.HTTPError:
                answer = None
            return stopped, answer

    stopped, answer = asyncio.run(stop())
    # uvicorn re-raises the captured SIGTERM once it has shut down: the exit status says "terminated"
    assert process.poll() in (0, -signal.SIGTERM) and stopped < 3.0, stopped
    assert answer is None or answer.status_code in (503, 504), answer.text
