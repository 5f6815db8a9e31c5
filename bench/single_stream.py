"""P8: single-stream decoding speed of `untuned serve --parallel 1` vs llama.cpp's `llama-server --parallel 1`.

Same GGUF (the bundled gemma-3-270m base), all cores, the same rendered URIAL prompt (`helpful` and
a query that makes a long answer), greedy with repetition penalty 1.1, 128 new tokens, streamed.
Decoding speed is (tokens - 1) / (time of the last streamed token - time of the first), measured by
the client the same way for both, so it leaves out prompt evaluation. 5 rounds each after a warm-up,
alternating servers; medians. Run: .venv/bin/python bench/single_stream.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
from rich.console import Console
from rich.table import Table
from serve_concurrency import PORT, counter, llama_server_target, start, untuned_target
from smoke import SMOKE, sized, skipped

QUERY = "Write a long story about a dragon who learns to paint."
ROUNDS = sized(5, 1)


async def decode_speed(target, count) -> tuple[float, int]:
    async with httpx.AsyncClient(timeout=600) as http:
        stamps, parts = [], []
        async for text in target.ask(http, QUERY):
            stamps.append(time.perf_counter())
            parts.append(text)
    tokens = count("".join(parts))
    return (tokens - 1) / (stamps[-1] - stamps[0]), tokens


def main() -> None:
    count = counter()
    targets = [untuned_target(1, PORT + 10)]
    if SMOKE:
        skipped("llama-server (built from source, bench/llama_server.py): untuned against itself")
        targets.append(untuned_target(1, PORT + 11))
    else:
        targets.append(llama_server_target(1, PORT + 11))
    processes = [start(target) for target in targets]
    try:
        speeds: dict[str, list[float]] = {t.name: [] for t in targets}
        tokens: dict[str, int] = {}
        for target in targets:
            asyncio.run(decode_speed(target, count))  # warm-up: the prefix is evaluated, caches filled
        for _ in range(ROUNDS):
            for target in targets:
                speed, tokens[target.name] = asyncio.run(decode_speed(target, count))
                speeds[target.name].append(speed)
    finally:
        for process in processes:
            process.terminate()
            process.wait()
    table = Table("server", "tokens", "median decode tok/s", "all rounds")
    for name, values in speeds.items():
        table.add_row(name, str(tokens[name]), f"{statistics.median(values):.1f}", " ".join(f"{v:.1f}" for v in values))
    console = Console(width=140)
    console.print(table)
    ours, theirs = (statistics.median(speeds[t.name]) for t in targets)
    console.print(f"untuned / llama-server, single stream: {ours / theirs:.2f}x (target >= 0.95x)")


if __name__ == "__main__":
    main()
