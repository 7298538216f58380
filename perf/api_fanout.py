"""How much the streaming pool buys API calls: concurrency 16 against concurrency 1, end to end through
`stillroom generate` and in process, with a fixed and with a heavy-tailed latency.

Two loopback fault servers, no faults: one answers every request after ``--delay-ms`` (100 ms), the other after
a log-normal latency (median ``--median-ms``, 99th percentile ``--p99-ms``) drawn from the request, so both
concurrencies meet the same latencies. Each end-to-end run is a `stillroom generate` subprocess with its own
empty call cache. Process start-up is subtracted: it is a zero-request run (the concurrent command again, every
answer cached: the same start-up, input and output) plus the import of the openai SDK, which a run that sends
requests pays once and the cached run never does (measured in a fresh interpreter). The client's CPU per
request is the subprocess's CPU time less that start-up's, divided by the requests. The in-process figure
calls the endpoint directly (cache off), fixed latency only. Runs go one at a time.

Prints ``name=value`` lines; the last is ``api_fanout_speedup`` = the smaller of the two end-to-end speedups
(goal >= 12 on a quiet 2-core machine).
Usage: python perf/api_fanout.py [--requests 512] [--delay-ms 100] [--median-ms 100] [--p99-ms 1000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("STILLROOM_NO_PROGRESS", "1")

from stillroom import Context, GenerationRequest  # noqa: E402
from stillroom.plugins.openai.endpoint import OpenAIEndpoint  # noqa: E402
from stillroom.testing.fault_server import start_fault_server  # noqa: E402

STILLROOM = str(Path(sys.executable).with_name("stillroom"))


def sdk_import() -> tuple[float, float]:
    """(wall, CPU) seconds of ``import openai`` in a fresh interpreter that already imported stillroom."""
    code = ("import time, stillroom.plugins.openai.endpoint; t, c = time.perf_counter(), time.process_time(); "
            "import openai; print(time.perf_counter() - t, time.process_time() - c)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall, cpu = (float(x) for x in done.stdout.split())
    return wall, cpu


def generate(folder: Path, name: str, base_url: str, concurrency: int, prompts: Path) -> dict:
    """One `stillroom generate` run with the call cache in ``folder/name``: wall and CPU seconds."""
    env = {**os.environ, "STILLROOM_CACHE_DIR": str(folder / name), "STILLROOM_PLUGINS": "openai",
           "STILLROOM_NO_PROGRESS": "1"}
    command = [STILLROOM, "generate", "--base-url", base_url, "--model", "fan-model", "--prompts", str(prompts),
               "--out", str(folder / f"{name}.jsonl"), "--concurrency", str(concurrency), "--max-tokens", "16",
               "--chat"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"stillroom generate failed: {done.stderr.strip()[-400:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall": wall, "cpu": cpu}


def in_process(base_url: str, concurrency: int, requests: list[GenerationRequest]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one generate call with the cache off."""
    config = OpenAIEndpoint.Config(base_url=base_url, model="fan-model", concurrency=concurrency, timeout=60)
    endpoint = OpenAIEndpoint(config, Context(cache=None, progress=False))
    started, cpu = time.perf_counter(), time.process_time()
    endpoint.generate(requests)
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 512: with a heavy tail, a few hundred requests are needed before the slowest one stops deciding the
    # makespan (at 128 the list-scheduling bound sum/16 + max*15/16 alone caps the speedup near 9x)
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--delay-ms", type=float, default=100.0, help="the fixed latency")
    parser.add_argument("--median-ms", type=float, default=100.0, help="median of the heavy-tailed latency")
    parser.add_argument("--p99-ms", type=float, default=1000.0, help="99th percentile of the heavy-tailed latency")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n, c = args.requests, args.concurrency

    texts = [f"fan-out question {i}" for i in range(n)]
    requests = [GenerationRequest(messages=[{"role": "user", "content": t}], max_tokens=16) for t in texts]
    with tempfile.TemporaryDirectory() as scratch, \
            start_fault_server(delay_ms=args.delay_ms) as fixed, \
            start_fault_server(latency_median_ms=args.median_ms, latency_p99_ms=args.p99_ms) as heavy:
        folder = Path(scratch)
        prompts = folder / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in enumerate(texts)))
        in_process(fixed.base_url, 1, [GenerationRequest(prompt="warm up")])  # SDK import, first connection

        fixed_c1 = generate(folder, "fixed_c1", fixed.base_url, 1, prompts)
        heavy_c1 = generate(folder, "heavy_c1", heavy.base_url, 1, prompts)
        heavy_stats = heavy.stats()
        fixed.reset()
        fixed_c16 = generate(folder, "fixed_c16", fixed.base_url, c, prompts)
        fixed_max_in_flight = fixed.stats()["max_in_flight"]
        heavy.reset()
        heavy_c16 = generate(folder, "heavy_c16", heavy.base_url, c, prompts)
        heavy_max_in_flight = heavy.stats()["max_in_flight"]
        fixed.reset()
        startup = generate(folder, "fixed_c16", fixed.base_url, c, prompts)  # all cached: start-up only
        startup_requests = fixed.stats()["requests"]
        import_s, import_cpu = sdk_import()
        inproc_c16_s, inproc_cpu = in_process(fixed.base_url, c, requests)
        inproc_c1_s, _ = in_process(fixed.base_url, 1, requests)
        same = all((folder / f"{name}.jsonl").read_text() == (folder / "fixed_c1.jsonl").read_text()
                   for name in ("fixed_c16",))

    start_s, start_cpu = startup["wall"] + import_s, startup["cpu"] + import_cpu
    net = {name: max(1e-3, run["wall"] - start_s) for name, run in
           {"fixed_c1": fixed_c1, "fixed_c16": fixed_c16, "heavy_c1": heavy_c1, "heavy_c16": heavy_c16}.items()}
    fixed_speedup = net["fixed_c1"] / net["fixed_c16"]
    heavy_speedup = net["heavy_c1"] / net["heavy_c16"]
    heavy_possible_s = max(heavy_stats["latency_s"] / c, heavy_stats["latency_max_s"])
    cpu_ms = {name: 1000 * (run["cpu"] - start_cpu) / n for name, run in
              {"fixed": fixed_c16, "heavy": heavy_c16}.items()}

    print(f"requests={n}")
    print(f"concurrency={c}")
    print(f"delay_ms={args.delay_ms:g}")
    print(f"heavy_median_ms={args.median_ms:g}")
    print(f"heavy_p99_ms={args.p99_ms:g}")
    print(f"load_average_1m={os.getloadavg()[0]:.1f}")
    print(f"startup_cached_run_s={startup['wall']:.3f}")
    print(f"startup_sdk_import_s={import_s:.3f}")
    print(f"startup_s={start_s:.3f}")
    print(f"startup_run_requests={startup_requests}")
    print(f"e2e_fixed_c1_s={net['fixed_c1']:.3f}")
    print(f"e2e_fixed_c{c}_s={net['fixed_c16']:.3f}")
    print(f"e2e_fixed_max_in_flight={fixed_max_in_flight}")
    print(f"e2e_heavy_latency_sum_s={heavy_stats['latency_s']:.3f}")
    print(f"e2e_heavy_latency_max_s={heavy_stats['latency_max_s']:.3f}")
    print(f"e2e_heavy_c1_s={net['heavy_c1']:.3f}")
    print(f"e2e_heavy_c{c}_s={net['heavy_c16']:.3f}")
    print(f"e2e_heavy_possible_c{c}_s={heavy_possible_s:.3f}")
    print(f"e2e_heavy_max_in_flight={heavy_max_in_flight}")
    # the client's own work per request: on a busy machine it, not the server's latency, bounds the speedup
    print(f"client_cpu_ms_per_request_e2e={cpu_ms['fixed']:.2f}")
    print(f"client_cpu_ms_per_request_e2e_heavy={cpu_ms['heavy']:.2f}")
    print(f"client_cpu_ms_per_request_in_process={1000 * inproc_cpu / n:.2f}")
    print(f"answers_identical={str(same).lower()}")
    print(f"in_process_c1_s={inproc_c1_s:.3f}")
    print(f"in_process_c{c}_s={inproc_c16_s:.3f}")
    print(f"in_process_speedup={inproc_c1_s / inproc_c16_s:.2f}")
    print(f"e2e_fixed_speedup={fixed_speedup:.2f}")
    print(f"e2e_heavy_speedup={heavy_speedup:.2f}")
    print(f"e2e_heavy_ideal_speedup={heavy_stats['latency_s'] / heavy_possible_s:.2f}")
    print(f"api_fanout_speedup={min(fixed_speedup, heavy_speedup):.2f}")


if __name__ == "__main__":
    main()
