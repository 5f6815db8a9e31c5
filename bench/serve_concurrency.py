"""P3: concurrent streaming clients against `untuned serve` and against llama.cpp's own servers.

Every server loads the bundled gemma-3-270m base GGUF with all cores and sees the same token input:
untuned gets chat messages and renders the `helpful` URIAL prompt itself; llama.cpp's C++ server
(`llama-server`, built from the sources llama-cpp-python vendors, see bench/llama_server.py) gets
that same rendered text on /completion with `cache_prompt` and the same stop strings;
`llama_cpp.server` gets it on /v1/completions. Greedy, repetition penalty 1.1, at most 128 new
tokens. Each client sends its just-eval queries one after the other. Tokens are counted by
tokenizing the streamed text with the model's tokenizer, the same way for every server. Time to
first token includes the wait for a free slot. Servers run one after the other, never at once.

P3 on equal work (the default): every server gets the same rendered URIAL prompt as raw text
(untuned on /v1/completions) and makes exactly 128 new tokens per request: no stop strings and the
end of sequence ignored (``ignore_eos``, with ``max_tokens`` / ``n_predict``), so each side does the
same work; requests/s, tokens/s and TTFT p50/p95 over three runs, with their spread.

Run: .venv/bin/python bench/serve_concurrency.py            (P3 on equal work: 8 clients x 4 queries, 3 runs)
     .venv/bin/python bench/serve_concurrency.py stops      (the older P3: stop strings, answers of any length)
     .venv/bin/python bench/serve_concurrency.py scaling    (--parallel 16, 1-16 clients, 32 queries; bench/scaling.png)
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from llama_server import llama_server
from rich.console import Console
from rich.table import Table
from smoke import SMOKE, data, sized, skipped

from untuned.backends import default_gguf_path
from untuned.conversation import DEFAULT_FORMAT, Conversation
from untuned.prompt import load_prompt

MAX_TOKENS = sized(128, 8)
THREADS = str(len(os.sched_getaffinity(0)))
PORT = 8721


@dataclass
class Target:
    name: str
    command: list[str]
    ready: str
    ask: Callable[[httpx.AsyncClient, str], AsyncIterator[str]]


def questions(count: int) -> list[str]:
    rows = [json.loads(line) for line in data("just_eval_instruct.jsonl").read_text().splitlines()[:count]]
    return [row["instruction"] for row in rows]


def rendered(question: str) -> str:
    conversation = Conversation(load_prompt("helpful"))
    conversation.add_user(question)
    return conversation.render().text


async def completion_texts(http: httpx.AsyncClient, question: str, *, port: int, **extra) -> AsyncIterator[str]:
    """The text pieces of a streamed, greedy OpenAI-style /v1/completions request for ``question`` in the
    URIAL prompt, with ``extra`` fields in the body."""
    body = {"model": "m", "prompt": rendered(question), "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True, **extra}
    async with http.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body) as response:
        async for event in sse(response):
            for choice in event.get("choices", []):
                if choice.get("text"):
                    yield choice["text"]


async def sse(response: httpx.Response) -> AsyncIterator[dict]:
    async for line in response.aiter_lines():
        if line.startswith("data: ") and line[6:].strip() != "[DONE]":
            yield json.loads(line[6:])


def untuned_serve(port: int, parallel: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "untuned",
        "serve",
        *f"--port {port} --n-ctx 4096 --max-waiting 64 --parallel {parallel}".split(),
    ]


def untuned_target(parallel: int, port: int) -> Target:
    command = untuned_serve(port, parallel)

    async def ask(http: httpx.AsyncClient, question: str) -> AsyncIterator[str]:
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "stream": True,
        }
        async with http.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as response:
            async for event in sse(response):
                for choice in event.get("choices", []):
                    if choice["delta"].get("content"):
                        yield choice["delta"]["content"]

    return Target(f"untuned serve --parallel {parallel}", command, f"http://127.0.0.1:{port}/health", ask)


def llama_server_body(question: str, **extra) -> dict:
    """llama-server's /completion request: the rendered prompt, greedy, untuned's repetition penalty."""
    return {
        "prompt": rendered(question),
        "n_predict": MAX_TOKENS,
        "temperature": 0,
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
        "cache_prompt": True,
        "stream": True,
        **extra,
    }


def llama_server_target(parallel: int, port: int) -> Target:
    model = default_gguf_path()
    command = [
        str(llama_server()),
        "-m",
        str(model),
        "--port",
        str(port),
        "-t",
        THREADS,
        "-tb",
        THREADS,
        "--no-webui",
        "--threads-http",
        "64",
        "-np",
        str(parallel),
        "-c",
        str(4096 * parallel),
    ] + (["--kv-unified"] if parallel > 1 else [])

    async def ask(http: httpx.AsyncClient, question: str) -> AsyncIterator[str]:
        body = llama_server_body(question, stop=list(DEFAULT_FORMAT.stop))
        async with http.stream("POST", f"http://127.0.0.1:{port}/completion", json=body) as response:
            async for event in sse(response):
                if event.get("content"):
                    yield event["content"]

    unified = " (unified KV)" if parallel > 1 else ""
    return Target(f"llama-server --parallel {parallel}{unified}", command, f"http://127.0.0.1:{port}/health", ask)


def untuned_equal_target(parallel: int, port: int) -> Target:
    """untuned serve on /v1/completions with the rendered prompt: exactly MAX_TOKENS new tokens."""
    command = untuned_serve(port, parallel)

    ask = functools.partial(completion_texts, port=port, ignore_eos=True)

    return Target(f"untuned serve --parallel {parallel}", command, f"http://127.0.0.1:{port}/health", ask)


def llama_server_equal_target(parallel: int, port: int) -> Target:
    """llama-server on /completion with the same prompt: exactly MAX_TOKENS new tokens."""
    target = llama_server_target(parallel, port)

    async def ask(http: httpx.AsyncClient, question: str) -> AsyncIterator[str]:
        body = llama_server_body(question, ignore_eos=True)
        async with http.stream("POST", f"http://127.0.0.1:{port}/completion", json=body) as response:
            async for event in sse(response):
                if event.get("content"):
                    yield event["content"]

    return Target(target.name, target.command, target.ready, ask)


def llama_cpp_python_target(port: int) -> Target:
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(default_gguf_path()),
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--n_threads",
        THREADS,
        "--interrupt_requests",
        "False",
    ]

    ask = functools.partial(completion_texts, port=port, stop=list(DEFAULT_FORMAT.stop), repeat_penalty=1.1)

    return Target("llama_cpp.server (llama-cpp-python)", command, f"http://127.0.0.1:{port}/v1/models", ask)


def start(target: Target) -> subprocess.Popen:
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(target.command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(target.ready, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    process.wait()
    log.seek(0)
    tail = log.read().decode(errors="replace")[-2000:]
    raise SystemExit(f"{target.name} did not start (exit status {process.returncode}); its last output:\n{tail}")


async def drive(target: Target, clients: int, per_client: int, work: list[str]) -> tuple[float, list[float], list[str]]:
    ttfts: list[float] = []
    texts: list[str] = []
    # a fresh connection per request: a server closing an idle kept-alive connection must not fail a request
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        async for _ in target.ask(http, "Hello"):  # warm-up: the prefix is evaluated before timing
            pass

        async def client(index: int) -> None:
            for turn in range(per_client):
                started, first, parts = time.perf_counter(), None, []
                async for text in target.ask(http, work[(index * per_client + turn) % len(work)]):
                    first = first or time.perf_counter()
                    parts.append(text)
                ttfts.append((first or time.perf_counter()) - started)
                texts.append("".join(parts))

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return time.perf_counter() - started, ttfts, texts


def measure(target: Target, clients: int, per_client: int, work: list[str]) -> tuple[float, list[float], list[str]]:
    process = start(target)
    try:
        return asyncio.run(drive(target, clients, per_client, work))
    finally:
        process.terminate()
        process.wait()


def counter() -> Callable[[str], int]:
    from llama_cpp import Llama

    tokenizer = Llama(model_path=str(default_gguf_path()), vocab_only=True, verbose=False)
    return lambda text: len(tokenizer.tokenize(text.encode(), add_bos=False, special=False))


def p3() -> None:
    clients, per_client = 8, 4
    work = questions(clients * per_client)
    count = counter()
    targets = [
        untuned_target(8, PORT),
        untuned_target(1, PORT + 1),
        llama_server_target(1, PORT + 2),
        llama_server_target(8, PORT + 3),
        llama_cpp_python_target(PORT + 4),
    ]
    table = Table("server", "requests", "tokens", "wall (s)", "aggregate tok/s", "TTFT p50 (s)", "TTFT p95 (s)")
    rates = {}
    for target in targets:
        wall, ttfts, texts = measure(target, clients, per_client, work)
        tokens = sum(count(t) for t in texts)
        rates[target.name] = tokens / wall
        table.add_row(
            target.name,
            str(len(texts)),
            str(tokens),
            f"{wall:.1f}",
            f"{rates[target.name]:.1f}",
            f"{statistics.median(ttfts):.2f}",
            f"{statistics.quantiles(ttfts, n=20)[-1]:.2f}",
        )
    console = Console(width=150)
    console.print(table)
    ours, ours_one = rates[targets[0].name], rates[targets[1].name]
    best_name = max((t.name for t in targets[2:4]), key=lambda name: rates[name])
    console.print(f"untuned --parallel 8 / {best_name}: {ours / rates[best_name]:.2f}x (target >= 1.2x)")
    console.print(f"untuned --parallel 8 / untuned --parallel 1: {ours / ours_one:.2f}x (target >= 1.5x)")
    console.print(f"untuned --parallel 8 / llama_cpp.server: {ours / rates[targets[4].name]:.2f}x")


def equal_work(runs: int = sized(3, 1)) -> None:
    """P3 on equal work: each request makes exactly MAX_TOKENS tokens on every server; three runs."""
    clients, per_client = sized((8, 4), (2, 1))
    work = questions(clients * per_client)
    targets = [untuned_equal_target(8, PORT), untuned_equal_target(1, PORT + 1)]
    if SMOKE:
        skipped("llama-server (built from source, bench/llama_server.py): untuned's side alone")
        targets += targets[:1]  # the ratios below still computed (against untuned itself)
    else:
        targets += [llama_server_equal_target(1, PORT + 2), llama_server_equal_target(8, PORT + 3)]
    rates: dict[str, list[float]] = {t.name: [] for t in targets}
    table = Table("server", "run", "requests", "tokens", "wall (s)", "requests/s", "tokens/s", "TTFT p50 (s)", "TTFT p95 (s)")
    for run in range(1, runs + 1):
        for target in targets:  # the sides alternate within each run
            wall, ttfts, texts = measure(target, clients, per_client, work)
            tokens = len(texts) * MAX_TOKENS  # every request made exactly MAX_TOKENS (ignore_eos, no stops)
            rates[target.name].append(tokens / wall)
            table.add_row(
                target.name,
                str(run),
                str(len(texts)),
                str(tokens),
                f"{wall:.1f}",
                f"{len(texts) / wall:.2f}",
                f"{tokens / wall:.1f}",
                f"{statistics.median(ttfts):.2f}",
                f"{statistics.quantiles(ttfts, n=20)[-1]:.2f}",
            )
    console = Console(width=150)
    console.print(table)
    for name, values in rates.items():
        console.print(f"{name}: {statistics.median(values):.1f} tok/s (runs: {', '.join(f'{v:.1f}' for v in values)})")
    ours, ours_one = (statistics.median(rates[t.name]) for t in targets[:2])
    best = max((t.name for t in targets[2:]), key=lambda name: statistics.median(rates[name]))
    console.print(
        f"untuned --parallel 8 / {best}: {ours / statistics.median(rates[best]):.2f}x (target >= 1.2x); "
        f"per run: {', '.join(f'{a / b:.2f}' for a, b in zip(rates[targets[0].name], rates[best]))}"
    )
    console.print(
        f"untuned --parallel 8 / untuned --parallel 1: {ours / ours_one:.2f}x (target >= 1.5x); per run: "
        f"{', '.join(f'{a / b:.2f}' for a, b in zip(rates[targets[0].name], rates[targets[1].name]))}"
    )


def scaling() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = counter()
    work = questions(32)
    sizes = [1, 2, 4, 8, 16]
    table = Table("clients", "requests", "tokens", "wall (s)", "aggregate tok/s", "TTFT p50 (s)", "TTFT p95 (s)")
    rates = []
    for clients in sizes:  # the same 32 queries at every size, split among the clients
        wall, ttfts, texts = measure(untuned_target(16, PORT + 5), clients, 32 // clients, work)
        tokens = sum(count(t) for t in texts)
        rates.append(tokens / wall)
        p95 = statistics.quantiles(ttfts, n=20)[-1] if len(ttfts) > 1 else ttfts[0]
        table.add_row(
            str(clients),
            str(len(texts)),
            str(tokens),
            f"{wall:.1f}",
            f"{rates[-1]:.1f}",
            f"{statistics.median(ttfts):.2f}",
            f"{p95:.2f}",
        )
    Console(width=150).print(table)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(sizes, rates, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("concurrent streaming clients")
    ax.set_ylabel("aggregate tokens/s")
    ax.set_ylim(bottom=0)
    ax.set_title("untuned serve --parallel 16, gemma-3-270m, 2 cores")
    fig.tight_layout()
    fig.savefig(Path(__file__).with_name("scaling.png"), dpi=110)


if __name__ == "__main__":
    {"scaling": scaling, "stops": p3}.get(sys.argv[1] if sys.argv[1:] else "", equal_work)()
