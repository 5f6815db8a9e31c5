"""Registries made of a package's modules and installed plugins: every module of ``package`` that declares
``attribute`` (an instance of ``kind``), then each entry point of ``group`` (a plugin's), keyed by name; a
built-in name is never replaced by a plugin's."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import TypeVar

from untuned.errors import UntunedError

T = TypeVar("T")


def discover(
    package: str, path: Iterable[str], attribute: str, group: str, kind: type[T], name: Callable[[T], str]
) -> dict[str, T]:
    found: dict[str, T] = {}
    for module in pkgutil.iter_modules(path):
        declared = getattr(importlib.import_module(f"{package}.{module.name}"), attribute, None)
        if isinstance(declared, kind):
            found[name(declared)] = declared
    for point in entry_points(group=group):
        declared = point.load()
        if not isinstance(declared, kind):
            raise UntunedError(f"the plugin entry point {point.name!r} ({point.value}) is not an untuned {kind.__name__}")
        found.setdefault(name(declared), declared)
    return found
