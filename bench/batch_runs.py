"""P6 and P7: batch runs on the local default models, items answered side by side vs one at a time.

P6: `untuned generate just-eval --limit 32 --max-tokens 128` on the bundled gemma base, with
`--concurrency 8` (8 slots decoded in one batch) and with `--concurrency 1`.
P7: `untuned judge multi` with the bundled local grammar judge (SmolLM2-135M-Instruct) on 32 of
those answers, `--concurrency 8` vs 1, no cache; verdicts compared.

Each side runs the real CLI in a subprocess into a fresh output file; the sides alternate.
Run: .venv/bin/python bench/batch_runs.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from smoke import data, sized

from untuned.generation import GenerationFile
from untuned.judge import VerdictFile

DATA = data("just_eval_instruct.jsonl")
ITEMS = sized(32, 2)


def tokenizer():
    from llama_cpp import Llama

    from untuned.backends import default_gguf_path

    model = Llama(model_path=str(default_gguf_path()), vocab_only=True, verbose=False)
    return lambda text: model.tokenize(text.encode(), add_bos=False, special=False)


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "untuned", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return time.perf_counter() - started


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="untuned-p6-"))
    table = Table("run", "concurrency", "seconds", "items/s")
    generated, judged = {}, {}
    for concurrency in (8, 1):
        out = folder / f"gen-{concurrency}.jsonl"
        seconds = timed(
            [
                "generate",
                "just-eval",
                "--data-file",
                str(DATA),
                "--limit",
                str(ITEMS),
                "--max-tokens",
                str(sized(128, 4)),
                "--concurrency",
                str(concurrency),
                "--out",
                str(out),
            ]
        )
        generated[concurrency] = (seconds, GenerationFile(out).read())
        table.add_row("P6 generate", str(concurrency), f"{seconds:.1f}", f"{ITEMS / seconds:.2f}")
    answers = folder / "gen-1.jsonl"
    for concurrency in (8, 1):
        out = folder / f"judge-{concurrency}.jsonl"
        seconds = timed(["judge", "multi", str(answers), "--out", str(out), "--concurrency", str(concurrency), "--no-cache"])
        judged[concurrency] = (seconds, {v.id: v for v in VerdictFile(out).read()})
        table.add_row("P7 judge (local SmolLM2)", str(concurrency), f"{seconds:.1f}", f"{ITEMS / seconds:.2f}")
    console = Console(width=120)
    console.print(table)
    console.print(f"P6 generate, 8 vs 1: {generated[1][0] / generated[8][0]:.2f}x items/s (target >= 1.5x)")
    alone = {r.id: r.output for r in generated[1][1]}
    batched = {r.id: r.output for r in generated[8][1]}
    tokenize = tokenizer()
    firsts = [first_difference(tokenize(alone[i]), tokenize(batched[i])) for i in alone if alone[i] != batched[i]]
    console.print(
        f"P6 answers identical to one-at-a-time: {ITEMS - len(firsts)}/{ITEMS}"
        + (
            f"; where they differ, the first different token is at position {statistics.median(firsts):.0f} "
            f"(median; {sorted(firsts)})"
            if firsts
            else ""
        )
    )
    console.print(f"P7 judge, 8 vs 1: {judged[1][0] / judged[8][0]:.2f}x items/s (target >= 1.5x)")
    one, eight = judged[1][1], judged[8][1]
    same_verdicts = sum(one[i].scores == eight[i].scores for i in one if i in eight)
    console.print(f"P7 verdicts identical to one-at-a-time: {same_verdicts}/{len(one)}")


if __name__ == "__main__":
    main()
