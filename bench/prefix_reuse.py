"""P1: latency of URIAL answers with the prefix's KV state reused vs recomputed, and vs a bare query.

Same 10 queries, `helpful` prompt, bundled gemma-3-270m base, 64 new tokens each (greedy, no stop
strings, so every answer costs the same). Run: .venv/bin/python bench/prefix_reuse.py
"""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.table import Table
from smoke import sized

from untuned import Sampling
from untuned.backends import default_gguf_path
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.conversation import Conversation
from untuned.prompt import PromptSet, load_prompt

QUERIES = [
    "What is the capital of France?",
    "How do plants make their food?",
    "Give me three tips for sleeping better.",
    "What is 15% of 240?",
    "Explain what a black hole is.",
    "How do I boil an egg?",
    "Write a haiku about the sea.",
    "Why is the sky blue?",
    "What does a compiler do?",
    "Name some famous painters.",
][: sized(10, 1)]
SAMPLING = Sampling(max_tokens=sized(64, 4), temperature=0.0, repetition_penalty=1.1)


def run(backend: LlamaCppBackend, prompt: PromptSet) -> tuple[list[float], list[float], int]:
    """Latency and time to first token of each query, and the new tokens of all."""
    latencies, first_tokens, tokens = [], [], 0
    for query in QUERIES:
        conversation = Conversation(prompt)
        conversation.add_user(query)
        started = time.perf_counter()
        first = None
        for piece in backend.stream(conversation.render(), SAMPLING):
            if piece.tokens and first is None:
                first = time.perf_counter() - started
            tokens += piece.tokens
        latencies.append(time.perf_counter() - started)
        first_tokens.append(first or latencies[-1])
    return latencies, first_tokens, tokens


def main() -> None:
    path = default_gguf_path()
    helpful = load_prompt("helpful")
    bare = PromptSet(name="bare", system="")
    results = {}
    for label, reuse, prompt in [
        ("reused prefix", True, helpful),
        ("recomputed prefix", False, helpful),
        ("bare query", True, bare),
    ]:
        backend = LlamaCppBackend(path, n_ctx=4096, reuse_prefix=reuse)
        run(backend, prompt)  # warm-up pass: page in the weights, fill the caches
        latencies, first_tokens, tokens = run(backend, prompt)
        results[label] = (statistics.mean(latencies), statistics.mean(first_tokens), tokens)
        backend.close()
    table = Table("mode", "mean latency / query (s)", "mean time to first token (s)", "new tokens (10 queries)")
    for label, (mean, first, tokens) in results.items():
        table.add_row(label, f"{mean:.3f}", f"{first:.3f}", str(tokens))
    console = Console()
    console.print(table)
    reused, recomputed, bare_mean = results["reused prefix"][0], results["recomputed prefix"][0], results["bare query"][0]
    console.print(f"recomputed / reused: {recomputed / reused:.2f}x faster with reuse (target >= 5x)")
    ttft = results["recomputed prefix"][1] / results["reused prefix"][1]
    console.print(f"time to first token, recomputed / reused: {ttft:.1f}x")
    console.print(f"reused / bare:       {reused / bare_mean:.2f}x the bare query's latency (target <= 1.25x)")


if __name__ == "__main__":
    main()
