"""What running the model in a supervised engine process costs `untuned serve` (issue 26), measured side
by side: the same server with `--in-process` (the model in the server's own process) and with the engine
process (the default), alternating within each round, on the bundled gemma with all cores.

- P1: 10 requests one after the other, each the `helpful` URIAL prompt (its prefix evaluated once and
  reused) with a just-eval query, exactly 64 new tokens (`ignore_eos`): mean latency.
- P8: one stream of exactly 128 new tokens: decode speed as the client sees it, (tokens - 1) / (last
  token time - first token time), median of 5.
- P3: 8 concurrent streaming clients x 4 queries, exactly 128 new tokens each: tokens per second.
- Resident memory (VmRSS) of the server's process and of the engine's, after the run.

Run: .venv/bin/python bench/engine_process.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from serve_concurrency import questions, rendered
from smoke import sized

PORT = 8731
MODES = {"in-process": ["--in-process"], "engine process": []}
SHORT, LONG = sized(64, 8), sized(128, 16)  # the tokens of a P1 answer, of a P8 and P3 answer


async def stream_times(http: httpx.AsyncClient, question: str, tokens: int) -> list[float]:
    """The arrival time of each streamed piece of an answer of exactly ``tokens`` tokens."""
    body = {"prompt": rendered(question), "max_tokens": tokens, "temperature": 0, "stream": True, "ignore_eos": True}
    times = []
    async with http.stream("POST", f"http://127.0.0.1:{PORT}/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                times.append(time.perf_counter())
    return times


async def measure(sizes: dict[str, int]) -> dict[str, float]:
    asked = questions(40)
    async with httpx.AsyncClient(timeout=600) as http:
        await stream_times(http, asked[0], 8)  # warm: the prefix evaluated once
        started = []
        for question in asked[: sizes["p1"]]:
            began = time.perf_counter()
            await stream_times(http, question, SHORT)
            started.append(time.perf_counter() - began)
        decode = []
        for question in asked[: sizes["p8"]]:
            times = await stream_times(http, question, LONG)
            decode.append((len(times) - 1) / (times[-1] - times[0]))
        began, clients = time.perf_counter(), 8
        per_client = [asked[10 + i * sizes["p3"] : 10 + (i + 1) * sizes["p3"]] for i in range(clients)]

        async def client(mine: list[str]) -> int:
            return sum([len(await stream_times(http, q, LONG)) for q in mine])

        produced = sum(await asyncio.gather(*(client(mine) for mine in per_client)))
        p3 = produced / (time.perf_counter() - began)
        process = (await http.get(f"http://127.0.0.1:{PORT}/health")).json()["engine_process"]
    return {"p1": statistics.mean(started), "p8": statistics.median(decode), "p3": p3, "engine_pid": process and process["pid"]}


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_mode(flags: list[str], sizes: dict[str, int]) -> dict[str, float]:
    command = [sys.executable, "-m", "untuned", "serve", "--port", str(PORT), "--n-ctx", "4096", "--parallel", "8", *flags]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"the server did not start: {log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.2)
            found = asyncio.run(measure(sizes))
            found["server_mb"], found["engine_mb"] = rss_mb(server.pid), rss_mb(found.pop("engine_pid"))
            return found
        finally:
            server.terminate()
            server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=sized(3, 1))
    args = parser.parse_args()
    sizes = sized({"p1": 10, "p8": 5, "p3": 4}, {"p1": 1, "p8": 1, "p3": 1})
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        for mode, flags in MODES.items() if round_ % 2 == 0 else reversed(MODES.items()):
            results[mode].append(run_mode(flags, sizes))
    table = Table(title="untuned serve: the model in the server's process vs in a supervised engine process")
    for column in ("mode", "P1 latency (s)", "P8 decode tok/s", "P3 tok/s", "server RSS (MB)", "engine RSS (MB)"):
        table.add_column(column)
    medians = {mode: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for mode, runs in results.items()}
    for mode, runs in results.items():
        cells = [" ".join(f"{r[key]:.3g}" for r in runs) for key in ("p1", "p8", "p3")]
        table.add_row(mode, *cells, f"{medians[mode]['server_mb']:.0f}", f"{medians[mode]['engine_mb']:.0f}")
    console = Console()
    console.print(table)
    base, supervised = medians["in-process"], medians["engine process"]
    console.print(
        f"engine process / in-process (medians): P1 latency {supervised['p1'] / base['p1']:.3f}x, "
        f"P8 decode {supervised['p8'] / base['p8']:.3f}x, P3 {supervised['p3'] / base['p3']:.3f}x"
    )


if __name__ == "__main__":
    main()
