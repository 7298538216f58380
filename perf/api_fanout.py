"""How much bounded concurrency buys the openai endpoint, and that a cached rerun costs no request.

Starts the loopback fault server with 100 ms of latency per request and no faults, answers 200 chat requests
at concurrency 1 and at concurrency 16 with the call cache off (so both really call), then runs the same
requests twice through a fresh call cache and counts what reached the server the second time.

Prints ``name=value`` lines; the last is ``api_fanout_speedup=X`` (sequential / concurrent, goal >= 12).
Usage: python perf/api_fanout.py [--requests 200] [--delay-ms 100] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("STILLROOM_NO_PROGRESS", "1")

from stillroom import Context, GenerationRequest  # noqa: E402
from stillroom.cache import CallCache  # noqa: E402
from stillroom.plugins.openai.endpoint import OpenAIEndpoint  # noqa: E402
from stillroom.testing.fault_server import start_fault_server  # noqa: E402


def endpoint(base_url: str, concurrency: int, context: Context) -> OpenAIEndpoint:
    config = OpenAIEndpoint.Config(base_url=base_url, model="fault-model", concurrency=concurrency, timeout=30)
    return OpenAIEndpoint(config, context)


def timed(api: OpenAIEndpoint, requests: list[GenerationRequest]):
    """(wall seconds, this process's CPU seconds, answers)."""
    started, cpu = time.perf_counter(), time.process_time()
    answers = api.generate(requests)
    return time.perf_counter() - started, time.process_time() - cpu, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    requests = [GenerationRequest(messages=[{"role": "user", "content": f"fan-out question {i}"}], max_tokens=16)
                for i in range(args.requests)]
    with start_fault_server(delay_ms=args.delay_ms) as server:
        # warm up (SDK import, first connection) outside the timings
        endpoint(server.base_url, 1, Context(cache=None)).generate([GenerationRequest(prompt="warm up")])

        server.reset()
        fanned = endpoint(server.base_url, args.concurrency, Context(cache=None))
        concurrent_s, client_cpu, concurrent = timed(fanned, requests)
        max_in_flight = server.stats()["max_in_flight"]
        server.reset()
        sequential_s, _, sequential = timed(endpoint(server.base_url, 1, Context(cache=None)), requests)
        sequential_requests = server.stats()["requests"]
        same = [[c.text for c in a] for a in concurrent] == [[c.text for c in a] for a in sequential]

        with tempfile.TemporaryDirectory() as folder:
            cache = CallCache(Path(folder) / "calls.sqlite")
            server.reset()
            first_s, _, _ = timed(endpoint(server.base_url, args.concurrency, Context(cache=cache)), requests)
            first_requests = server.stats()["requests"]
            server.reset()
            rerun = endpoint(server.base_url, args.concurrency, Context(cache=cache))
            rerun_s, _, cached = timed(rerun, requests)
            rerun_requests = server.stats()["requests"]
            cache.close()
        same = same and [[c.text for c in a] for a in cached] == [[c.text for c in a] for a in concurrent]

    ideal = args.requests / -(-args.requests // args.concurrency)  # latency-bound rounds: n vs ceil(n / c)
    print(f"requests={args.requests}")
    print(f"delay_ms={args.delay_ms:g}")
    print(f"concurrency={args.concurrency}")
    print(f"sequential_s={sequential_s:.3f}")
    print(f"sequential_requests={sequential_requests}")
    print(f"concurrent_s={concurrent_s:.3f}")
    print(f"concurrent_max_in_flight={max_in_flight}")
    # the client's own work per request; on a busy machine it, not the server's latency, bounds concurrent_s
    print(f"client_cpu_ms_per_request={1000 * client_cpu / args.requests:.2f}")
    print(f"load_average_1m={os.getloadavg()[0]:.1f}")
    print(f"answers_identical={str(same).lower()}")
    print(f"cached_first_run_s={first_s:.3f}")
    print(f"cached_first_run_requests={first_requests}")
    print(f"rerun_s={rerun_s:.3f}")
    print(f"rerun_requests={rerun_requests}")
    print(f"rerun_cache_hits={rerun.stats['cache_hits']}")
    print(f"ideal_speedup={ideal:g}")
    print(f"api_fanout_speedup={sequential_s / concurrent_s:.2f}")


if __name__ == "__main__":
    main()
