"""P5: generation speed of untuned vs calling llama-cpp-python directly, same prompt, same model.

Both sides: bundled gemma-3-270m base, the `helpful` URIAL prompt plus one query, greedy, 128 new
tokens with no stop strings, every token detokenized, all cores. untuned runs its whole stack
(Assistant -> Completion -> stop scanner -> backend stream); the direct side is
`Llama.generate` in a loop. Runs alternate, 5 rounds; medians are compared.
Run: .venv/bin/python bench/throughput.py
"""

from __future__ import annotations

import os
import statistics
import time

from llama_cpp import Llama
from rich.console import Console
from rich.table import Table
from smoke import sized

from untuned import Assistant, Sampling
from untuned.backends import default_gguf_path
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.prompt import load_prompt

NEW_TOKENS = sized(128, 8)
ROUNDS = sized(5, 1)
QUERY = "Write a detailed guide to growing tomatoes at home."


def untuned_round(bot: Assistant, sampling: Sampling) -> tuple[float, float, int]:
    conversation = bot.conversation()
    conversation.add_user(QUERY)
    started = time.perf_counter()
    completion = bot.complete_prompt(conversation.render(), sampling=sampling)
    first = None
    for _ in completion:
        if first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    return ended - started, ended - (first or ended), completion.completion_tokens


def direct_round(llm: Llama, ids: list[int]) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = None
    count = 0
    for token in llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.1):
        llm.detokenize([token])
        count += 1
        if first is None:
            first = time.perf_counter()
        if count == NEW_TOKENS:
            break
    ended = time.perf_counter()
    return ended - started, ended - first, count


def main() -> None:
    path = default_gguf_path()
    threads = len(os.sched_getaffinity(0))
    backend = LlamaCppBackend(path, n_ctx=4096, threads=threads)
    bot = Assistant(backend, load_prompt("helpful"))
    sampling = Sampling(max_tokens=NEW_TOKENS, temperature=0.0, repetition_penalty=1.1, stop=())
    conversation = bot.conversation()
    conversation.add_user(QUERY)
    rendered = conversation.render()
    ids = backend.tokenize(rendered.prefix, add_special=True) + backend.tokenize(rendered.body)
    llm = Llama(model_path=str(path), n_ctx=4096, n_threads=threads, n_threads_batch=threads, swa_full=True, verbose=False)

    untuned_runs, direct_runs = [], []
    untuned_round(bot, sampling)
    direct_round(llm, ids)  # warm-up both
    for _ in range(ROUNDS):
        untuned_runs.append(untuned_round(bot, sampling))
        direct_runs.append(direct_round(llm, ids))

    table = Table("stack", "median total (s)", "median decode tok/s", "tokens")
    rates = {}
    for label, runs in (("untuned", untuned_runs), ("llama-cpp-python direct", direct_runs)):
        rate = statistics.median((n - 1) / decode for _, decode, n in runs)
        rates[label] = rate
        table.add_row(label, f"{statistics.median(t for t, _, _ in runs):.3f}", f"{rate:.1f}", str(runs[0][2]))
    console = Console()
    console.print(table)
    console.print(
        f"untuned / direct decode tokens/s: {rates['untuned'] / rates['llama-cpp-python direct']:.3f}x (target >= 0.95x)"
    )


if __name__ == "__main__":
    main()
