"""P2: shift analysis in one teacher-forced pass per answer vs the per-position loop without cache.

20 JUST-EVAL reference answers (gpt-4-0613, ids 0-19), bundled gemma-3-270m base, `text` mode
with the plain context (query, blank line). The one-pass side is `ShiftAnalyzer.analyze` (all
positions, ranks, top-5, records). The loop side is what the original analysis did: for each
answer position, evaluate the whole context + answer prefix from an empty cache and rank the
next token from the last logits row.

The full loop costs hours here (its work grows with the square of the answer length), so it is
timed on every STRIDE-th position of every answer and its total is that time x STRIDE: an
unbiased estimate, since the positions sampled are spread evenly along each answer. Ranks are
compared at every sampled position. Run: .venv/bin/python bench/shift_speed.py [STRIDE] [llama.cpp|transformers]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from smoke import data, sized

from untuned.answers import read_answers
from untuned.backends import LoadOptions, default_gguf_path, load_backend
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.shift import ShiftAnalyzer, category, plain_context

COUNT = sized(20, 1)


def loop_rank(backend, ids: list[int], position: int) -> int:
    """Rank of ids[position] after evaluating ids[:position] from scratch (no cache reuse)."""
    if not isinstance(backend, LlamaCppBackend):  # transformers: one forward pass over the prefix
        import torch

        with torch.inference_mode():
            row = backend.model(torch.tensor([ids[:position]], device=backend.device)).logits[0, -1].float().cpu().numpy()
        return int((row > row[ids[position]]).sum()) + 1
    with backend.engine.exclusive() as (ctx, batch, seq):
        for begin in range(0, position, batch.capacity):
            chunk = ids[begin : min(position, begin + batch.capacity)]
            batch.clear()
            batch.add(chunk, begin, seq, np.arange(len(chunk)) == len(chunk) - 1)  # logits of the last row only
            ctx.decode(batch)
        logits = ctx.logits(1)[0]
        return int((logits > logits[ids[position]]).sum()) + 1


def main() -> None:
    stride = int(sys.argv[1]) if len(sys.argv) > 1 else sized(16, 64)
    use = sys.argv[2] if len(sys.argv) > 2 else "llama.cpp"
    items = read_answers(data("reference_outputs/gpt-4-0613.jsonl"))[:COUNT]
    if use == "transformers":  # the same GGUF, dequantized to float32 by transformers
        backend = load_backend("default", LoadOptions(backend="transformers", device="cpu", n_ctx=4096))
    else:
        backend = LlamaCppBackend(default_gguf_path(), n_ctx=4096)
    analyzer = ShiftAnalyzer(backend, mode="text")
    analyzer.analyze(items[0])  # warm-up

    started = time.perf_counter()
    examples = [analyzer.analyze(item) for item in items]
    one_pass = time.perf_counter() - started
    positions = sum(len(e.tokens) for e in examples)

    sampled = same = same_category = 0
    loop_seconds = 0.0
    for item, example in zip(items, examples):
        context = backend.tokenize(plain_context(item.query), add_special=True)
        ids = context + backend.tokenize(item.answer)
        for token in example.tokens[::stride]:
            began = time.perf_counter()
            rank = loop_rank(backend, ids, len(context) + token.index)
            loop_seconds += time.perf_counter() - began
            sampled += 1
            same += rank == token.rank
            same_category += category(rank) == token.category
    loop_estimate = loop_seconds * stride

    table = Table("method", "positions", "seconds", "positions/s")
    table.add_row("one teacher-forced pass per answer", str(positions), f"{one_pass:.2f}", f"{positions / one_pass:.1f}")
    table.add_row(
        f"per-position loop, every {stride}th position", str(sampled), f"{loop_seconds:.2f}", f"{sampled / loop_seconds:.2f}"
    )
    table.add_row(
        "per-position loop, all positions (estimate)", str(positions), f"{loop_estimate:.1f}", f"{positions / loop_estimate:.2f}"
    )
    console = Console(width=120)
    console.print(table)
    console.print(f"backend: {use}; answers: {len(items)}, mean answer length {positions / len(items):.0f} tokens")
    console.print(f"speed-up (loop / one pass): {loop_estimate / one_pass:.1f}x (target >= 50x)")
    console.print(f"identical ranks at sampled positions: {same}/{sampled} ({100 * same / sampled:.2f}%)")
    console.print(f"identical categories at sampled positions: {same_category}/{sampled} ({100 * same_category / sampled:.2f}%)")


if __name__ == "__main__":
    main()
