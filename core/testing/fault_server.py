"""A loopback OpenAI-compatible server that injects faults: rate limits, server errors, slow answers, dropped
connections, truncated and garbage bodies.

It exists to test clients (the ``openai`` endpoint, or any other) against the failures real APIs produce. Its
answers are a pure function of the request, so a run through faults must end with exactly the answers of a
fault-free run. Which attempt fails is a function of the seed, the request body and how many times that body
was seen, so a given seed gives the same fault pattern whatever order concurrent requests arrive in.

It also plays a server under load: a latency per request (fixed, or heavy-tailed: log-normal with a given
median and 99th percentile, drawn from the seed and the request, so every client sees the same latencies), a
limit on requests in flight (429 with Retry-After beyond it, as providers' concurrency limits do), and a hold
(answer the first N requests, then keep every later one waiting until ``POST /release``) that lets a test kill a
client at a known point.

Run it with ``python -m stillroom.testing.fault_server --port 0 --rate-429 0.1 ...``; it prints
``listening on http://127.0.0.1:PORT`` once ready. Tests use :func:`start_fault_server`, which runs it in a
subprocess and stops it by PID. It binds to loopback only and must never be exposed.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health``,
``GET /stats`` (request and fault counts, the most requests ever in flight at once, answers per distinct
request), ``GET /stats/timeline`` (every change of the in-flight count: ``[seconds, in_flight, arrivals]``),
``POST /stats/reset`` and ``POST /release`` (answer held requests and stop holding).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

FAULTS = ("429", "500", "slow", "drop", "truncated", "garbage")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            429: "Too Many Requests", 500: "Internal Server Error"}


@dataclass
class FaultOptions:
    """How the server misbehaves; every rate is the probability that one attempt gets that fault."""

    delay_ms: float = 0.0  # latency of every generation request
    rate_429: float = 0.0  # 429 with a Retry-After header
    rate_500: float = 0.0  # 500 with an error body
    rate_slow: float = 0.0  # the right answer, slow_ms late
    rate_drop: float = 0.0  # the socket closed without a response
    rate_truncated: float = 0.0  # 200 with the JSON body cut in half
    rate_garbage: float = 0.0  # 200 with an HTML body
    slow_ms: float = 3000.0
    retry_after: str = "1"  # the Retry-After value of 429s: seconds or an HTTP date
    seed: int = 0
    answer: str = "echo"  # "echo: <last message>" or, with "fixed", fixed_text
    fixed_text: str = "OK"
    require_key: str | None = None  # answer 401 (echoing the key sent) unless this bearer key comes
    first_fault: str | None = None  # the first attempt of every distinct request gets this fault
    latency_median_ms: float = 0.0  # with latency_p99_ms: a log-normal latency per request, on top of delay_ms
    latency_p99_ms: float = 0.0
    max_in_flight: int = 0  # 0: no limit; else a 429 (Retry-After: limit_retry_after) for requests beyond it
    limit_retry_after: str = "0.05"
    hold_after: int = 0  # 0: never; else answer this many generation requests, then hold the rest until /release


@dataclass
class ServerState:
    options: FaultOptions
    requests: int = 0
    ok: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    faults: dict[str, int] = field(default_factory=lambda: {f: 0 for f in FAULTS})
    by_path: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)  # good answers sent per distinct request
    limited: int = 0  # 429s for going over max_in_flight
    held: int = 0
    passed: int = 0  # generation requests let through while a hold was armed
    latency_s: float = 0.0  # injected latency of the good answers, summed
    latency_max_s: float = 0.0
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def reset(self) -> None:
        self.requests = self.ok = self.limited = self.held = self.passed = 0
        self.latency_s = self.latency_max_s = 0.0
        self.max_in_flight = self.in_flight
        self.faults = {f: 0 for f in FAULTS}
        self.by_path = {}
        self.attempts = {}
        self.answered = {}
        self.timeline = []

    def moved(self, change: int) -> None:
        """The in-flight count changed by ``change``; kept on the timeline (bounded: tests and perf runs)."""
        self.in_flight += change
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if len(self.timeline) < 200_000:
            self.timeline.append((time.monotonic(), self.in_flight, self.requests))

    def snapshot(self) -> dict[str, Any]:
        return {"requests": self.requests, "ok": self.ok, "faults": dict(self.faults), "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "by_path": dict(self.by_path), "limited": self.limited,
                "held": self.held, "answered_distinct": len(self.answered),
                "answered_again": sum(n - 1 for n in self.answered.values()), "latency_s": round(self.latency_s, 6),
                "latency_max_s": round(self.latency_max_s, 6),
                "uptime_s": round(time.time() - self.started, 3)}


# ---------------------------------------------------------------------------------------------------------
# Deterministic answers.


def _unit(*parts: Any) -> float:
    """A number in [0, 1) that depends only on ``parts``."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_fault(options: FaultOptions, body: bytes, attempt: int) -> str | None:
    """The fault for the ``attempt``-th sighting of this request body, or None for a good answer."""
    if attempt == 0 and options.first_fault:
        return options.first_fault
    draw = _unit(options.seed, hashlib.sha256(body).hexdigest(), attempt)
    edge = 0.0
    for fault in FAULTS:
        edge += getattr(options, f"rate_{fault}")
        if draw < edge:
            return fault
    return None


def latency_s(options: FaultOptions, body: bytes) -> float:
    """The latency of a request: delay_ms, plus a log-normal draw (median, 99th percentile) that depends only on
    the seed and the body, so sequential and concurrent clients meet the same latencies."""
    extra = 0.0
    if options.latency_median_ms > 0:
        p99 = max(options.latency_p99_ms, options.latency_median_ms)
        sigma = (math.log(p99 / options.latency_median_ms) / statistics.NormalDist().inv_cdf(0.99))
        draw = min(max(_unit(options.seed, "latency", hashlib.sha256(body).hexdigest()), 1e-12), 1 - 1e-12)
        extra = options.latency_median_ms * math.exp(sigma * statistics.NormalDist().inv_cdf(draw))
    return (options.delay_ms + extra) / 1000


def _words(text: str) -> list[str]:
    return text.split()


def _prompt_text(payload: dict[str, Any]) -> tuple[str, int]:
    """The text answered (last message or the prompt) and the prompt's token count (whitespace words)."""
    if "messages" in payload:
        messages = payload.get("messages") or []
        contents = [m.get("content") or "" for m in messages if isinstance(m, dict)]
        contents = [c if isinstance(c, str) else json.dumps(c) for c in contents]
        return (contents[-1] if contents else ""), sum(len(_words(c)) for c in contents)
    prompt = payload.get("prompt", "")
    if isinstance(prompt, list):
        prompt = " ".join(str(p) for p in prompt)
    return str(prompt), len(_words(str(prompt)))


def answer_text(options: FaultOptions, text: str, index: int) -> str:
    """The full answer for sample ``index`` before ``max_tokens`` and ``stop`` cut it."""
    base = options.fixed_text if options.answer == "fixed" else f"echo: {text}"
    return base if index == 0 else f"{base} #{index}"


def _logprob(token: str, rank: int) -> float:
    return round(-0.05 - 2.0 * _unit("lp", token) - 1.5 * rank, 6)


def _cut(words: list[str], max_tokens: int | None, stop: list[str]) -> tuple[str, list[str], str]:
    finish = "stop"
    if max_tokens is not None and len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
    text = " ".join(words)
    for marker in stop:
        if marker and marker in text:
            text, finish = text[:text.index(marker)], "stop"
            words = text.split()
    return text, words, finish


def build_answer(options: FaultOptions, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI-shaped response body for a chat or text completion request."""
    text, prompt_tokens = _prompt_text(payload)
    n = int(payload.get("n") or 1)
    stop = payload.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    max_tokens = payload.get("max_tokens")
    chat = path.endswith("/chat/completions")
    if chat:
        top_k = int(payload.get("top_logprobs") or 0) if payload.get("logprobs") else None
    else:
        top_k = payload.get("logprobs")
        top_k = int(top_k) if top_k is not None else None
    choices, completion_tokens = [], 0
    for index in range(n):
        content, words, finish = _cut(_words(answer_text(options, text, index)), max_tokens, stop)
        completion_tokens += len(words)
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
        logprobs = None
        if top_k is not None and chat:
            logprobs = {"content": [
                {"token": t, "logprob": _logprob(t, 0), "bytes": list(t.encode()),
                 "top_logprobs": [{"token": t if r == 0 else f"{t}~{r}", "logprob": _logprob(t, r),
                                   "bytes": list((t if r == 0 else f"{t}~{r}").encode())} for r in range(top_k)]}
                for t in tokens], "refusal": None}
        elif top_k is not None:
            offsets, at = [], 0
            for t in tokens:
                offsets.append(at)
                at += len(t)
            logprobs = {"tokens": tokens, "token_logprobs": [_logprob(t, 0) for t in tokens],
                        "top_logprobs": [{(t if r == 0 else f"{t}~{r}"): _logprob(t, r) for r in range(top_k)}
                                         for t in tokens] if top_k else None,
                        "text_offset": offsets}
        if chat:
            choices.append({"index": index, "finish_reason": finish, "logprobs": logprobs,
                            "message": {"role": "assistant", "content": content}})
        else:
            choices.append({"index": index, "finish_reason": finish, "logprobs": logprobs, "text": content})
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    return {"id": ("chatcmpl-" if chat else "cmpl-") + digest,
            "object": "chat.completion" if chat else "text_completion", "created": 1700000000,
            "model": payload.get("model", "fault-model"), "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


# ---------------------------------------------------------------------------------------------------------
# A small HTTP/1.1 server on asyncio streams: faults like a dropped socket need control below what an ASGI
# framework exposes.


def _response(status: int, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None,
               length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body) if length is None else length}", "Connection: keep-alive",
             f"Date: {formatdate(usegmt=True)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _json(status: int, value: Any, headers: dict[str, str] | None = None) -> bytes:
    return _response(status, json.dumps(value).encode(), headers=headers)


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> bytes:
    return _json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}}, headers)


class FaultServer:
    """The request handler and its counters."""

    def __init__(self, options: FaultOptions):
        self.options = options
        self.state = ServerState(options)
        self.release = asyncio.Event()  # set by POST /release: held requests are answered

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                method, path, headers, body = request
                keep = await self._respond(method, path, headers, body, writer, reader)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        return method.upper(), target.split("?", 1)[0], headers, body

    async def _respond(self, method: str, path: str, headers: dict[str, str], body: bytes,
                       writer: asyncio.StreamWriter, reader: asyncio.StreamReader | None = None) -> bool:
        """Write one response; False when the connection must be closed."""
        state, options = self.state, self.options
        if path == "/health" and method == "GET":
            return await self._send(writer, _json(200, {"status": "ok"}))
        if path == "/stats" and method == "GET":
            return await self._send(writer, _json(200, state.snapshot()))
        if path == "/stats/reset" and method == "POST":
            state.reset()
            return await self._send(writer, _json(200, {"reset": True}))
        if path == "/stats/timeline" and method == "GET":
            start = state.timeline[0][0] if state.timeline else 0.0
            return await self._send(writer, _json(200, [[round(t - start, 6), n, a] for t, n, a in state.timeline]))
        if path == "/release" and method == "POST":
            self.release.set()
            return await self._send(writer, _json(200, {"released": True}))
        if path == "/v1/models" and method == "GET":
            return await self._send(writer, _json(200, {"object": "list", "data": [
                {"id": "fault-model", "object": "model", "created": 0, "owned_by": "stillroom"}]}))
        if path not in ("/v1/chat/completions", "/v1/completions"):
            return await self._send(writer, _error(404, f"no route {path}", "not_found"))
        if method != "POST":
            return await self._send(writer, _error(405, "use POST", "invalid_request_error"))

        state.requests += 1
        state.by_path[path] = state.by_path.get(path, 0) + 1
        if options.max_in_flight and state.in_flight >= options.max_in_flight:
            state.limited += 1
            return await self._send(writer, _error(429, f"more than {options.max_in_flight} requests in flight",
                                                   "rate_limit_error", {"Retry-After": options.limit_retry_after}))
        state.moved(+1)
        try:
            if options.hold_after and not self.release.is_set():
                if state.passed >= options.hold_after:
                    state.held += 1
                    await self.release.wait()
                else:
                    state.passed += 1
            latency = latency_s(options, body)
            if latency:
                await asyncio.sleep(latency)
            if options.require_key is not None:
                sent = headers.get("authorization", "")
                if sent != f"Bearer {options.require_key}":
                    # Like careless proxies do, echo what was sent: clients must not repeat it in their errors.
                    return await self._send(writer, _error(401, f"invalid API key in header {sent!r}",
                                                           "invalid_request_error"))
            try:
                payload = json.loads(body or b"{}")
                if not isinstance(payload, dict) or "model" not in payload:
                    raise ValueError("the body must be a JSON object with 'model'")
            except ValueError as exc:
                return await self._send(writer, _error(400, f"bad request: {exc}", "invalid_request_error"))
            digest = hashlib.sha256(path.encode() + b"\0" + body).hexdigest()
            attempt = state.attempts.get(digest, 0)
            state.attempts[digest] = attempt + 1
            fault = choose_fault(options, path.encode() + b"\0" + body, attempt)
            if fault is not None:
                state.faults[fault] += 1
            if fault == "429":
                return await self._send(writer, _error(429, "rate limited (injected fault)", "rate_limit_error",
                                                       {"Retry-After": options.retry_after}))
            if fault == "500":
                return await self._send(writer, _error(500, "internal error (injected fault)", "server_error"))
            if fault == "drop":
                writer.transport.abort()
                return False
            if fault == "slow":
                await asyncio.sleep(options.slow_ms / 1000)
            answer = json.dumps(build_answer(options, path, payload)).encode()
            if fault == "truncated":
                return await self._send(writer, _response(200, answer[: max(1, len(answer) // 2)]))
            if fault == "garbage":
                noise = hashlib.sha256(body).hexdigest().encode() * 4
                return await self._send(writer, _response(200, b"<html>upstream " + noise + b"</html>", "text/html"))
            if reader is not None and reader.at_eof():
                return False  # the client hung up (killed) while waiting: nobody receives this answer
            state.ok += 1
            state.latency_s += latency
            state.latency_max_s = max(state.latency_max_s, latency)
            state.answered[digest] = state.answered.get(digest, 0) + 1
            return await self._send(writer, _response(200, answer))
        finally:
            state.moved(-1)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> bool:
        writer.write(data)
        await writer.drain()
        return True


async def serve(options: FaultOptions, host: str = "127.0.0.1", port: int = 0, ready=None) -> None:
    """Serve until cancelled; ``ready(port)`` is called once the socket listens."""
    server = FaultServer(options)
    listener = await asyncio.start_server(server.handle, host, port, reuse_address=True, backlog=512)
    bound = listener.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    async with listener:
        await listener.serve_forever()


# ---------------------------------------------------------------------------------------------------------
# Running it from tests and scripts.


class FaultServerProcess:
    """A fault server running in a subprocess: ``.base_url`` for clients, ``.stats()``, ``.reset()``, ``.stop()``."""

    def __init__(self, process: subprocess.Popen, port: int):
        self.process = process
        self.pid = process.pid
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v1"

    def _call(self, method: str, path: str) -> dict[str, Any]:
        import httpx

        response = httpx.request(method, self.url + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset(self) -> dict[str, Any]:
        return self._call("POST", "/stats/reset")

    def timeline(self) -> list[list[float]]:
        """``[seconds since the first change, in flight after it, requests arrived so far]`` per change."""
        return self._call("GET", "/stats/timeline")  # type: ignore[return-value]

    def release(self) -> dict[str, Any]:
        return self._call("POST", "/release")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> "FaultServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_fault_server(*, timeout: float = 30.0, **options: Any) -> FaultServerProcess:
    """Start a fault server on a free loopback port in a subprocess and wait until /health answers.

    ``options`` are :class:`FaultOptions` fields (``rate_429=0.1``, ``delay_ms=100``, ...).
    """
    import httpx

    unknown = set(options) - set(FaultOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown fault server options: {sorted(unknown)}")
    command = [sys.executable, "-m", "stillroom.testing.fault_server", "--port", "0"]
    for key, value in options.items():
        if value is not None:
            command += ["--" + key.replace("_", "-"), str(value)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith("listening on "):
        process.kill()
        process.wait()
        raise RuntimeError(f"fault server did not start (exit code {process.returncode}): {line!r}")
    handle = FaultServerProcess(process, int(line.rsplit(":", 1)[1]))
    while time.monotonic() < deadline:
        try:
            if httpx.get(handle.url + "/health", timeout=2).status_code == 200:
                return handle
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.05)
    handle.stop()
    raise RuntimeError("fault server did not answer /health")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stillroom.testing.fault_server",
                                     description="An OpenAI-compatible loopback server that injects faults.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one, printed on start)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="latency added to every generation request")
    for fault, what in [("429", "a 429 with Retry-After"), ("500", "a 500 error"),
                        ("slow", "an answer delayed by --slow-ms"), ("drop", "a connection closed without a response"),
                        ("truncated", "a JSON body cut in half"), ("garbage", "a 200 with an HTML body")]:
        parser.add_argument(f"--rate-{fault}", type=float, default=0.0, help=f"probability of {what} per attempt")
    parser.add_argument("--latency-median-ms", type=float, default=0.0,
                        help="heavy-tailed latency: median of a log-normal draw per request (added to --delay-ms)")
    parser.add_argument("--latency-p99-ms", type=float, default=0.0,
                        help="99th percentile of the log-normal latency (e.g. median 200, p99 5000)")
    parser.add_argument("--max-in-flight", type=int, default=0,
                        help="answer 429 to requests beyond this many in flight (0: no limit)")
    parser.add_argument("--limit-retry-after", default="0.05",
                        help="Retry-After header value of the 429s sent for going over --max-in-flight")
    parser.add_argument("--hold-after", type=int, default=0,
                        help="answer this many requests, then hold every later one until POST /release (0: never)")
    parser.add_argument("--slow-ms", type=float, default=3000.0, help="extra delay of a slow answer")
    parser.add_argument("--retry-after", default="1", help="Retry-After header value sent with 429s "
                                                          "(seconds or an HTTP date)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault pattern")
    parser.add_argument("--answer", choices=["echo", "fixed"], default="echo",
                        help="echo: 'echo: <last message>'; fixed: always --fixed-text")
    parser.add_argument("--fixed-text", default="OK", help="the answer in --answer fixed mode")
    parser.add_argument("--require-key", default=None, help="answer 401 unless this bearer key is sent")
    parser.add_argument("--first-fault", choices=FAULTS, default=None,
                        help="give the first attempt of every distinct request this fault (deterministic tests)")
    args = parser.parse_args(argv)
    options = FaultOptions(delay_ms=args.delay_ms, rate_429=args.rate_429, rate_500=args.rate_500,
                           rate_slow=args.rate_slow, rate_drop=args.rate_drop, rate_truncated=args.rate_truncated,
                           rate_garbage=args.rate_garbage, slow_ms=args.slow_ms, retry_after=args.retry_after,
                           seed=args.seed, answer=args.answer, fixed_text=args.fixed_text,
                           require_key=args.require_key, first_fault=args.first_fault,
                           latency_median_ms=args.latency_median_ms, latency_p99_ms=args.latency_p99_ms,
                           max_in_flight=args.max_in_flight, limit_retry_after=args.limit_retry_after,
                           hold_after=args.hold_after)
    if sum(getattr(options, f"rate_{f}") for f in FAULTS) > 1.0:
        parser.error("the fault rates add up to more than 1")

    def ready(port: int) -> None:
        print(f"listening on http://127.0.0.1:{port}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(serve(options, port=args.port, ready=ready))
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
