"""``untuned pool``: the kept examples (list, show, export, import, remove), served with ``--prompt pool:NAME``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from untuned.cli.common import friendly, out
from untuned.errors import UntunedError
from untuned.pool import Pool, PoolError
from untuned.prompt import SUFFIX, load_prompt, read_examples

pool_app = typer.Typer(help="Kept examples: answers you chose, served as a many-shot prompt set with --prompt pool:NAME.")
Name = Annotated[str, typer.Argument(help="The pool's name (letters, digits, '.', '@', '+', '_', '-').")]
Id = Annotated[int, typer.Argument(help="A kept example's id (untuned pool list NAME shows them).")]


def _short(text: str, width: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@pool_app.command("list")
@friendly
def list_command(name: Annotated[str | None, typer.Argument(help="A pool: its examples (default: every pool).")] = None) -> None:
    """The pools and how many examples each holds; with NAME, that pool's examples in order."""
    pool = Pool()
    try:
        if name is None:
            table = Table("pool", "examples", title=str(pool.path))
            for pool_name, count in pool.pools():
                table.add_row(pool_name, str(count))
        else:
            table = Table("id", "query", "answer", "edited", "model", "kept", title=f"pool {name}")
            for kept in pool.examples(name):
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(kept.created))
                edited = "yes" if kept.original is not None else ""
                table.add_row(str(kept.id), _short(kept.query), _short(kept.answer), edited, kept.model or "", when)
        out.print(table)
    finally:
        pool.close()


@pool_app.command("show")
@friendly
def show_command(example_id: Id) -> None:
    """One kept example whole: query, answer as kept, the model's original where it was edited."""
    pool = Pool()
    try:
        kept = pool.get(example_id)
    finally:
        pool.close()
    out.print(json.dumps({**kept.__dict__}, ensure_ascii=False, indent=2))


@pool_app.command("export")
@friendly
def export_command(
    name: Name,
    target: Annotated[Path, typer.Argument(help="A .urial file (the pool as a prompt set) or .jsonl (one example a line).")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite TARGET if it exists.")] = False,
) -> None:
    """Write a pool as a .urial prompt set (what --prompt pool:NAME serves) or as JSONL with every field."""
    if target.exists() and not force:
        raise UntunedError(f"{target} exists: pass --force to overwrite it")
    pool = Pool()
    try:
        if target.suffix == ".jsonl":
            rows = [json.dumps(kept.__dict__, ensure_ascii=False) for kept in pool.examples(name)]
            if not rows:
                raise PoolError(f"the pool {name!r} holds no examples")
            target.write_text("\n".join(rows) + "\n", encoding="utf-8")
        elif target.name.endswith(SUFFIX):
            target.write_text(pool.prompt_set(name).to_text(), encoding="utf-8")
        else:
            raise UntunedError(f"{target}: export writes a {SUFFIX} or a .jsonl file")
    finally:
        pool.close()
    out.print(f"wrote the pool {name} to {target}")


@pool_app.command("import")
@friendly
def import_command(
    name: Name,
    source: Annotated[Path, typer.Argument(help="A .urial file, or JSON/JSONL of query and answer rows or chat messages.")],
) -> None:
    """Keep the examples of SOURCE in the pool NAME (a .urial set, JSONL of query/answer or instruction/output, or a
    chat export in OpenAI messages form). Examples the pool holds already are skipped and counted; the first bad
    one stops the import before anything is written."""
    examples = list(load_prompt(source).examples) if source.name.endswith(SUFFIX) else read_examples(source)
    if not examples:
        raise UntunedError(f"{source} holds no examples")
    pool = Pool()
    kept = skipped = 0
    try:
        for example in examples:  # checked first: nothing is written if one cannot be kept
            pool.check(name, example.query, example.answer)
        for example in reversed(examples):  # each goes first: the source's order is kept
            try:
                pool.keep(name, example.query, example.answer, prompt_set=str(source))
                kept += 1
            except PoolError as exc:
                if "holds this example already" not in str(exc):
                    raise
                skipped += 1
    finally:
        pool.close()
    out.print(f"kept {kept} examples in the pool {name}" + (f"; {skipped} it held already were skipped" if skipped else ""))


@pool_app.command("remove")
@friendly
def remove_command(example_id: Id) -> None:
    """Delete one kept example."""
    pool = Pool()
    try:
        kept = pool.remove(example_id)
    finally:
        pool.close()
    out.print(f"removed example {kept.id} from the pool {kept.pool}: {_short(kept.query)}")
