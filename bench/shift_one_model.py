"""The page's shift (context mode on the server's one model): ranks made where the model runs
(TargetScoring: two teacher-forced passes, top-k only leaves the model) against whole log-probability
rows (any backend's ``distributions``: two passes of 262k-wide rows, and the base's own-token ranks
from the same rows), side by side in one run, alternating.

GPT-4's just-eval reference answers (ids 0-4), the bundled gemma-3-270m base through llama.cpp in a
supervised engine process (as `untuned serve` runs it: what leaves the model crosses a pipe), the
`helpful` URIAL set; the same records either way (checked). Run:
.venv/bin/python bench/shift_one_model.py
"""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.table import Table
from smoke import data, sized

from untuned.answers import read_answers
from untuned.backends import LoadOptions
from untuned.prompt import load_prompt
from untuned.shift import ShiftAnalyzer
from untuned.supervised import SupervisedBackend, supervise

ROUNDS = sized(3, 1)
ANSWERS = sized(5, 1)
CHARS = sized(None, 160)  # of each answer


class WholeRows:
    """The Backend protocol alone over a loaded model: no TargetScoring, so the analysis reads whole rows."""

    def __init__(self, backend: SupervisedBackend) -> None:
        self.inner, self.name, self.context_length = backend, backend.name, backend.context_length

    def tokenize(self, text, *, add_special=False):
        return self.inner.tokenize(text, add_special=add_special)

    def detokenize(self, tokens):
        return self.inner.detokenize(tokens)

    def stream(self, prompt, sampling):
        return self.inner.stream(prompt, sampling)

    def score(self, tokens, *, start=1, top_k=5):
        return self.inner.score(tokens, start=start, top_k=top_k)

    def distributions(self, tokens, *, start=1):
        return self.inner.distributions(tokens, start=start)

    def close(self) -> None:
        pass


def main() -> None:
    backend = supervise("default", LoadOptions(n_ctx=4096))
    items = [i.model_copy(update={"answer": i.answer[:CHARS]}) for i in read_answers(data("reference_outputs/gpt-4-0613.jsonl"))]
    items = items[:ANSWERS]
    prompt = load_prompt("helpful")
    sides = {"ranks where the model runs": backend, "whole rows": WholeRows(backend)}
    times: dict[str, list[float]] = {name: [] for name in sides}
    records: dict[str, list] = {}
    for round_ in range(ROUNDS):
        for name, model in sides.items() if round_ % 2 == 0 else reversed(sides.items()):
            analyzer = ShiftAnalyzer(model, mode="context", aligned=model, prompt=prompt)
            began = time.perf_counter()
            records[name] = [analyzer.analyze(item).tokens for item in items]
            times[name].append(time.perf_counter() - began)
    backend.close()
    positions = sum(len(tokens) for tokens in records["whole rows"])
    pairs = [(a, b) for x, y in zip(*records.values()) for a, b in zip(x, y)]
    same = sum((a.id, a.rank, a.answer_rank) == (b.id, b.rank, b.answer_rank) for a, b in pairs)
    table = Table("ranks", "seconds (rounds)", "median", "positions/s")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        table.add_row(name, " ".join(f"{s:.2f}" for s in seconds), f"{median:.2f}", f"{positions / median:.0f}")
    console = Console(width=120)
    console.print(table)
    ratio = statistics.median(times["whole rows"]) / statistics.median(times["ranks where the model runs"])
    console.print(f"{len(items)} answers, {positions} positions; same records at {same}/{len(pairs)}; speed-up {ratio:.2f}x")


if __name__ == "__main__":
    main()
