"""Where untuned keeps what it caches: ``$UNTUNED_CACHE_DIR``, else ``$XDG_CACHE_HOME/untuned``, else
``~/.cache/untuned`` (judge replies in ``judge.sqlite``, evaluated prefixes in ``prefixes/``); and what is the
user's own, never dropped as a cache is: ``$UNTUNED_DATA_DIR``, else ``$XDG_DATA_HOME/untuned``, else
``~/.local/share/untuned`` (kept examples in ``pool.sqlite``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    found = os.environ.get("UNTUNED_CACHE_DIR")
    if found:
        return Path(found).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "untuned"


def data_dir() -> Path:
    found = os.environ.get("UNTUNED_DATA_DIR")
    if found:
        return Path(found).expanduser()
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "untuned"
