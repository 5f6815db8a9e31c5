"""Speculative decoding on the default model (issue 36): URIAL answers to JUST-EVAL queries, greedy, with and
without prompt-lookup drafting, side by side in one run.

For each setting the same answers are made twice, plain and with ``--draft prompt-lookup``: decoding speed
(tokens after the first over the time after the first, the prompt's evaluation left out), the share of guesses
the model confirmed, and how many answers came out identical to the plain ones. Two settings: the machine's
threads with the default attention (what a user gets), and one thread with flash attention (where llama.cpp
computes a row of a batch as it computes it alone, so every answer must be identical).

Run: .venv/bin/python bench/speculative.py
"""

from __future__ import annotations

import json
import os

from rich.console import Console
from rich.table import Table
from smoke import data, sized

from untuned import Sampling
from untuned.assistant import Assistant
from untuned.backends import default_gguf_path
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.prompt import load_prompt

QUERIES = [json.loads(line)["instruction"] for line in data("just_eval_instruct.jsonl").read_text().splitlines()[: sized(16, 2)]]
MAX_TOKENS = sized(256, 16)


def run(threads: int, flash_attn: str, draft: str | None) -> tuple[list[str], float, int, float]:
    """(answers, decode tokens/s, tokens timed, share of guesses confirmed)."""
    backend = LlamaCppBackend(default_gguf_path(), threads=threads, flash_attn=flash_attn, prefix_cache=False, draft=draft)
    try:
        assistant = Assistant(backend, load_prompt("helpful"), Sampling(temperature=0, max_tokens=MAX_TOKENS))
        answers, tokens, seconds = [], 0, 0.0
        for query in QUERIES:
            completion = assistant.ask(query)
            answers.append(completion.text)
            if completion.decode_tokens_per_second:
                timed = completion.completion_tokens - 1
                tokens += timed
                seconds += timed / completion.decode_tokens_per_second
        stats = backend.stats()
        share = stats.draft_accepted / stats.draft_proposed if stats.draft_proposed else 0.0
        return answers, tokens / seconds if seconds else 0.0, tokens, share
    finally:
        backend.close()


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    title = f"{len(QUERIES)} URIAL answers of up to {MAX_TOKENS} tokens, greedy (the first token's time left out)"
    table = Table(
        "setting", "drafting", "tokens timed", "tokens/s", "vs plain", "guesses confirmed", "answers identical", title=title
    )
    for threads, flash in ((cores, "auto"), (1, "on")):
        setting = f"{threads} thread{'s' * (threads > 1)}, flash attention {'on' if flash == 'on' else 'off'}"
        plain, plain_rate, plain_tokens, _ = run(threads, flash, None)
        table.add_row(setting, "none", str(plain_tokens), f"{plain_rate:.1f}", "1.00x", "", "")
        drafted, rate, tokens, share = run(threads, flash, "prompt-lookup")
        same = sum(a == b for a, b in zip(plain, drafted))
        table.add_row(
            "",
            "prompt lookup",
            str(tokens),
            f"{rate:.1f}",
            f"{rate / plain_rate:.2f}x",
            f"{share:.0%}",
            f"{same} of {len(plain)}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
