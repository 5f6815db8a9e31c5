"""The KV cache's type (issue 30): f16 (flash attention off, the default), f16 with flash attention, q8_0
and q4_0 (flash attention on, as llama.cpp needs), on the bundled gemma-3-270m base with all cores.

For each: KV bytes per token (the plan's figure, which tests/test_plan.py holds equal to llama.cpp's
allocation), prefill speed (the `long` prompt set's ~2,000-token prefix evaluated from empty, tokens/s,
median of 3), decode speed (16 greedy answers of 64 new tokens to just-eval queries, the `helpful` set,
tokens/s after the first token, median), and how many of the 16 greedy answers are identical to f16's
without flash attention (the default) and with it (the same attention kernel: the quantization's own effect).
Run: .venv/bin/python bench/kv_types.py
"""

from __future__ import annotations

import json
import statistics
import time

from rich.console import Console
from rich.table import Table
from smoke import data, sized

from untuned import Assistant, Sampling
from untuned.backends import default_gguf_path
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.conversation import render_prefix
from untuned.placement import Settings, make_placement, model_facts
from untuned.placement.fit import Machine
from untuned.prompt import load_prompt

CONFIGS = [("f16", "off"), ("f16", "on"), ("q8_0", "auto"), ("q4_0", "auto")]
QUESTIONS = sized(16, 2)
NEW_TOKENS = sized(64, 8)


def questions() -> list[str]:
    rows = data("just_eval_instruct.jsonl").read_text().splitlines()[:QUESTIONS]
    return [json.loads(row)["instruction"] for row in rows]


def prefill_speed(backend: LlamaCppBackend) -> float:
    ids = backend.tokenize(render_prefix(load_prompt(sized("long", "helpful"))), add_special=True)
    speeds = []
    for _ in range(sized(3, 1)):
        with backend.engine.exclusive() as (ctx, batch, seq):
            ctx.clear(seq)
            began = time.perf_counter()
            for start in range(0, len(ids), batch.capacity):
                chunk = ids[start : start + batch.capacity]
                batch.clear()
                batch.add(chunk, start, seq, False)
                ctx.decode(batch)
            speeds.append(len(ids) / (time.perf_counter() - began))
            ctx.clear(seq)
    return statistics.median(speeds)


def main() -> None:
    facts = model_facts("default")
    asked = questions()
    answers: dict[str, list[str]] = {}
    table = Table(
        "KV type", "flash attention", "KV bytes/token", "prefill tok/s", "decode tok/s", "same as f16", "same as f16 + flash"
    )
    for kv_type, flash in CONFIGS:
        name = f"{kv_type} (flash {flash})"
        backend = LlamaCppBackend(default_gguf_path(), n_ctx=4096, kv_type=kv_type, flash_attn=flash)
        try:
            on = backend.engine.ctx.flash_attn
            per_token = make_placement(facts, Machine(), Settings(kv_type=kv_type, flash_attn=on)).kv_bytes_per_token
            prefill = prefill_speed(backend)
            bot = Assistant(backend, load_prompt("helpful"), Sampling(max_tokens=NEW_TOKENS, temperature=0))
            decode, answers[name] = [], []
            for question in asked:
                completion = bot.ask(question)
                answers[name].append(completion.text)
                decode.append(completion.decode_tokens_per_second or 0.0)
        finally:
            backend.close()
        same = [
            f"{sum(a == b for a, b in zip(answers[name], answers[ref]))}/{len(asked)}" if ref in answers else "–"
            for ref in ("f16 (flash off)", "f16 (flash on)")
        ]
        cells = [f"{per_token:.0f}", f"{prefill:.0f}", f"{statistics.median(decode):.1f}"]
        table.add_row(kv_type, "on" if on else "off", *cells, *same)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
