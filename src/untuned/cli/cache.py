"""``untuned cache list`` and ``untuned cache clear``: the evaluated prompt prefixes kept on disk."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from untuned.backends.llamacpp.prefix_store import clear, default_folder, stored
from untuned.cli.common import out

cache_app = typer.Typer(help="The evaluated prompt prefixes kept on disk (loaded at the next start instead of evaluated).")
Folder = Annotated[
    Path | None,
    typer.Option("--folder", help="The prefix cache folder ($UNTUNED_CACHE_DIR/prefixes or ~/.cache/untuned/prefixes)."),
]


@cache_app.command("list")
def list_command(folder: Folder = None) -> None:
    """List the saved prefixes, most recently used first: model, tokens, size, last use."""
    where = folder or default_folder()
    entries = stored(where)
    table = Table("file", "model", "tokens", "MB", "last used", title=f"{where}: {len(entries)} prefixes")
    for entry in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        table.add_row(entry.path.name, entry.model, str(entry.tokens), f"{entry.bytes / 1e6:.1f}", used)
    out.print(table)
    out.print(f"total {sum(e.bytes for e in entries) / 1e6:.1f} MB")


@cache_app.command("clear")
def clear_command(folder: Folder = None) -> None:
    """Delete every saved prefix (they are evaluated again when next needed)."""
    where = folder or default_folder()
    out.print(f"deleted {clear(where)} saved prefixes from {where}")
