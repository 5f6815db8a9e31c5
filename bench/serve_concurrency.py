"""P3: 8 concurrent streaming clients against `untuned serve` and against `llama_cpp.server`.

Both servers load the bundled gemma-3-270m base GGUF (n_ctx 4096, all cores) and see the same
token input: untuned gets chat messages and renders the `helpful` URIAL prompt itself;
llama_cpp.server gets that same rendered text on /v1/completions with the same stop strings
(its chat endpoint would apply gemma's chat template instead). llama_cpp.server runs with
`--interrupt_requests False`, so a new request queues instead of cutting the running stream.
Greedy, 64 new tokens at most. Each of 8 clients sends 2 questions in a row (16 requests).
Tokens are counted by tokenizing the streamed text with the same tokenizer on both sides.
The servers run one after the other, never at once. Run: .venv/bin/python bench/serve_concurrency.py
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import openai
from rich.console import Console
from rich.table import Table

from untuned.backends import default_gguf_path
from untuned.conversation import DEFAULT_FORMAT, Conversation
from untuned.prompt import load_prompt

CLIENTS = 8
PER_CLIENT = 2
MAX_TOKENS = 64
QUESTIONS = [
    "What is the capital of France?", "Give me three tips for sleeping better.", "What is photosynthesis?",
    "How do I boil an egg?", "Name two planets near the Sun.", "Why is the sky blue?", "What is a prime number?",
    "Suggest a name for a grey cat.", "How many legs does a spider have?", "What does a thermometer measure?",
    "Write a haiku about rain.", "What is the largest ocean?", "How do bees make honey?", "What is gravity?",
    "Explain what a noun is.", "Why do we have seasons?",
]  # fmt: skip


def start(command: list[str], ready: str) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=tempfile.TemporaryFile(), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"server did not start: {command}")


async def one(call, question: str, timings: list[float], texts: list[str]) -> None:
    started = time.perf_counter()
    first = None
    parts = []
    async for chunk in await call(question):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text = choice.delta.content if hasattr(choice, "delta") else choice.text
        if text:
            first = first or time.perf_counter()
            parts.append(text)
    timings.append((first or time.perf_counter()) - started)
    texts.append("".join(parts))


async def load(call) -> tuple[float, list[float], list[str]]:
    timings: list[float] = []
    texts: list[str] = []

    async def client(index: int) -> None:
        for turn in range(PER_CLIENT):
            await one(call, QUESTIONS[(index * PER_CLIENT + turn) % len(QUESTIONS)], timings, texts)

    await call_warm(call)
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return time.perf_counter() - started, timings, texts


async def call_warm(call) -> None:  # loads the prefix into the server's cache on both sides
    async for _ in await call("Hello"):
        pass


def main() -> None:
    model = default_gguf_path()
    prompt = load_prompt("helpful")
    from llama_cpp import Llama

    tokenizer = Llama(model_path=str(model), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(tokenizer.tokenize(text.encode(), add_bos=False, special=False))

    def rendered(question: str) -> str:
        conversation = Conversation(prompt)
        conversation.add_user(question)
        return conversation.render().text

    results = {}
    port = 8711
    untuned = [sys.executable, "-m", "untuned", "serve", "--port", str(port), "--n-ctx", "4096", "--max-waiting", "64"]
    ours = start(untuned, f"http://127.0.0.1:{port}/health")
    try:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600)

        def ask_ours(question: str):
            messages = [{"role": "user", "content": question}]
            return client.chat.completions.create(model="m", messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True)

        results["untuned serve"] = asyncio.run(load(ask_ours))
    finally:
        ours.terminate()
        ours.wait()

    theirs_command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--port", str(port + 1),
                      "--n_ctx", "4096", "--interrupt_requests", "False"]  # fmt: skip
    theirs = start(theirs_command, f"http://127.0.0.1:{port + 1}/v1/models")
    try:
        other = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port + 1}/v1", api_key="x", max_retries=0, timeout=600)
        stops = list(DEFAULT_FORMAT.stop)

        def ask_theirs(question: str):
            return other.completions.create(model="m", prompt=rendered(question), max_tokens=MAX_TOKENS, temperature=0,
                                            stop=stops, stream=True, extra_body={"repeat_penalty": 1.1})  # fmt: skip

        results["llama_cpp.server"] = asyncio.run(load(ask_theirs))
    finally:
        theirs.terminate()
        theirs.wait()

    table = Table("server", "requests", "tokens", "wall (s)", "aggregate tok/s", "TTFT p50 (s)", "TTFT p95 (s)")
    rates = {}
    for name, (wall, timings, texts) in results.items():
        tokens = sum(count(t) for t in texts)
        rates[name] = tokens / wall
        p95 = statistics.quantiles(timings, n=20)[-1]
        table.add_row(name, str(len(texts)), str(tokens), f"{wall:.2f}", f"{rates[name]:.1f}",
                      f"{statistics.median(timings):.2f}", f"{p95:.2f}")  # fmt: skip
    console = Console(width=140)
    console.print(table)
    console.print(f"untuned / llama_cpp.server aggregate tokens/s: {rates['untuned serve'] / rates['llama_cpp.server']:.2f}x"
                  " (target >= 1.0)")  # fmt: skip


if __name__ == "__main__":
    main()
