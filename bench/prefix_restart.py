"""Time to the first answer after a restart with a 4,000-token many-shot prefix (issue 30): the prefix loaded
from the disk cache vs evaluated again, each a fresh `untuned ask` process on the bundled gemma-3-270m base.

The many-shot prompt set is written here from just-eval's GPT-4 reference answers (query and answer pairs,
first come, until the prefix passes 4,000 tokens). Each round: the cache emptied, `ask` (evaluates the
prefix and saves it), then `ask` again (loads it); 3 rounds. Time to first token is the command's own
figure (from the request to the first token: the prefix's evaluation or load included); wall time is
the whole process (start-up and model load included, the same on both sides). Greedy answers compared.
Run: .venv/bin/python bench/prefix_restart.py
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from smoke import data, sized

from untuned.backends import default_gguf_path
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.conversation import render_prefix
from untuned.prompt import load_prompt

TARGET = sized(4000, 300)
QUESTION = "What are three good habits for learning a new language?"


def many_shot(folder: Path) -> tuple[Path, int]:
    """A prompt set of reference answers whose prefix passes TARGET tokens; its path and token count."""
    rows = [json.loads(line) for line in data("reference_outputs/gpt-4-0613.jsonl").read_text().splitlines()]
    tokenizer = LlamaCppBackend(default_gguf_path(), n_ctx=8192)
    path = folder / "many-shot.urial"
    try:
        blocks = []
        for row in rows:
            answer = re.sub(r"^=+", "", row["output"].strip(), flags=re.MULTILINE)
            blocks.append(f"=== query ===\n{row['instruction'].strip()}\n\n=== answer ===\n{answer}\n")
            text = "name: many-shot\ndescription: just-eval reference answers.\n\n=== system ===\nAn assistant.\n\n"
            path.write_text(text + "\n".join(blocks), encoding="utf-8")
            tokens = len(tokenizer.tokenize(render_prefix(load_prompt(str(path))), add_special=True))
            if tokens >= TARGET:
                return path, tokens
    finally:
        tokenizer.close()
    raise SystemExit("not enough reference answers for the many-shot prefix")


def ask(prompt: Path, cache: Path) -> tuple[float, float, str]:
    """(time to first token, wall seconds, answer) of one fresh `untuned ask` process."""
    command = [sys.executable, "-m", "untuned", "ask", QUESTION, "--prompt", str(prompt), "-n", "48", "--n-ctx", "8192"]
    began = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "UNTUNED_CACHE_DIR": str(cache)}, check=True
    )
    wall = time.perf_counter() - began
    first = float(re.search(r"first token ([\d.]+) s", done.stderr).group(1))
    return first, wall, done.stdout


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="untuned-restart-"))
    prompt, tokens = many_shot(folder)
    cache = folder / "cache"
    runs: dict[str, list[tuple[float, float, str]]] = {"evaluated": [], "loaded": []}
    for _ in range(sized(3, 1)):
        for saved in (cache / "prefixes").glob("*.kv"):
            saved.unlink()
        runs["evaluated"].append(ask(prompt, cache))
        runs["loaded"].append(ask(prompt, cache))
    table = Table("prefix", "time to first token (s)", "wall (s)", title=f"first answer after a restart, {tokens}-token prefix")
    for name, found in runs.items():
        table.add_row(name, " ".join(f"{f:.2f}" for f, _, _ in found), " ".join(f"{w:.2f}" for _, w, _ in found))
    console = Console(width=140)
    console.print(table)
    ttft = {name: statistics.median(f for f, _, _ in found) for name, found in runs.items()}
    wall = {name: statistics.median(w for _, w, _ in found) for name, found in runs.items()}
    same = sum(a[2] == b[2] for a, b in zip(runs["evaluated"], runs["loaded"]))
    console.print(
        f"evaluated / loaded: time to first token {ttft['evaluated'] / ttft['loaded']:.1f}x (target >= 10x), "
        f"wall {wall['evaluated'] / wall['loaded']:.2f}x; identical greedy answers {same}/{len(runs['loaded'])}"
    )


if __name__ == "__main__":
    main()
