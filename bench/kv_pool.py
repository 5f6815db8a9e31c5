"""Should `untuned serve` share one KV pool by default (issue 30)? Measured side by side on the bundled gemma,
`--parallel 8`, window 4096: each slot its own stream of the window (today's default) against one pool of
8192 cells (`--kv-budget 8192`).

- P3 on equal work: 8 streaming clients x 4 just-eval queries, exactly 128 new tokens each (ignore_eos),
  tokens/s; the sides alternate, 3 runs, medians.
- Exactness: 16 greedy answers (at most 64 tokens), each asked alone, on a fresh server, and again after
  the P3 traffic has used the cache; then the same 16 asked 4 at a time (batch invariance: at most 7 rows
  decoded together give each its answer alone on the streams); identical answers counted against the
  fresh streams server's alone.
Run: .venv/bin/python bench/kv_pool.py
"""

from __future__ import annotations

import asyncio
import json
import statistics

import httpx
from rich.console import Console
from rich.table import Table
from serve_concurrency import PORT, Target, drive, questions, start, untuned_equal_target
from smoke import data, sized

CLIENTS, PER_CLIENT = sized((8, 4), (2, 1))
ALONE = sized(16, 2)


def target(pool: bool) -> Target:
    base = untuned_equal_target(8, PORT + 20 + pool)
    command = base.command + (["--kv-budget", "8192"] if pool else [])
    return Target("one pool of 8192 cells" if pool else "own stream per slot", command, base.ready, base.ask)


def alone(port: int, asked: list[str]) -> list[str]:
    answers = []
    for question in asked:
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": sized(64, 8), "temperature": 0}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=600)
        answers.append(reply.json()["choices"][0]["message"]["content"])
    return answers


def together(port: int, asked: list[str], width: int = 4) -> list[str]:
    async def one(http: httpx.AsyncClient, question: str) -> str:
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": sized(64, 8), "temperature": 0}
        reply = await http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
        return reply.json()["choices"][0]["message"]["content"]

    async def run() -> list[str]:
        found: list[str] = []
        async with httpx.AsyncClient(timeout=600) as http:
            for start in range(0, len(asked), width):
                found += await asyncio.gather(*(one(http, q) for q in asked[start : start + width]))
        return found

    return asyncio.run(run())


def main() -> None:
    work = questions(CLIENTS * PER_CLIENT)
    asked = [json.loads(row)["instruction"] for row in data("just_eval_instruct.jsonl").read_text().splitlines()[-ALONE:]]
    rates: dict[str, list[float]] = {}
    answers: dict[str, dict[str, list[str]]] = {}
    for run in range(sized(3, 1)):
        for pool in (False, True) if run % 2 == 0 else (True, False):
            side = target(pool)
            port = int(side.ready.split(":")[2].split("/")[0])
            process = start(side)
            try:
                fresh = alone(port, asked) if run == 0 else None
                wall, _, texts = asyncio.run(drive(side, CLIENTS, PER_CLIENT, work))
                after = alone(port, asked) if run == 0 else None
                grouped = together(port, asked) if run == 0 else None
            finally:
                process.terminate()
                process.wait()
            rates.setdefault(side.name, []).append(len(texts) * sized(128, 8) / wall)
            if run == 0:
                answers[side.name] = {"fresh": fresh, "after traffic": after, "4 at a time": grouped}
    table = Table("KV", "P3 tok/s (runs)", "median", "alone, fresh", "alone, after traffic", "4 at a time")
    reference = answers["own stream per slot"]["fresh"]
    for name, values in rates.items():
        same = {k: sum(a == b for a, b in zip(v, reference)) for k, v in answers[name].items()}
        table.add_row(
            name,
            " ".join(f"{v:.1f}" for v in values),
            f"{statistics.median(values):.1f}",
            f"{same['fresh']}/{len(asked)}",
            f"{same['after traffic']}/{len(asked)}",
            f"{same['4 at a time']}/{len(asked)}",
        )
    console = Console(width=150)
    console.print(table)
    streams, pool = (statistics.median(rates[name]) for name in ("own stream per slot", "one pool of 8192 cells"))
    console.print(f"pool / streams, P3: {pool / streams:.3f}x")


if __name__ == "__main__":
    main()
