"""What crosses between the server's process and the engine's: the capabilities a backend may have, the
status of the engine's process, and errors packed by class name, message and plain attributes."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from untuned.backends.protocol import (
    Batched,
    BatchInvariance,
    BatchScoring,
    ChatTemplated,
    CountsWork,
    MemoryReporting,
    SchemaConstrained,
    TargetScoring,
    TokenPieces,
    TopKDistributions,
)
from untuned.errors import ModelFailure

CAPABILITIES = {
    "ChatTemplated": ChatTemplated,
    "Batched": Batched,
    "CountsWork": CountsWork,
    "TokenPieces": TokenPieces,
    "TopKDistributions": TopKDistributions,
    "BatchScoring": BatchScoring,
    "TargetScoring": TargetScoring,
    "SchemaConstrained": SchemaConstrained,
    "MemoryReporting": MemoryReporting,
    "BatchInvariance": BatchInvariance,
}
EngineState = Literal["starting", "running", "restarting", "failed", "closed"]


@dataclass(frozen=True)
class EngineProcessStatus:
    """What ``/health`` shows of the engine's process."""

    state: EngineState
    restarts: int
    pid: int | None
    last_exit: str | None  # how the last child ended ("signal SIGABRT", "exit code 1"), None if none has
    crashes: dict[str, int] = field(default_factory=dict)  # how each child ended, counted


def pack_error(exc: BaseException) -> tuple[str, str, str, dict[str, Any]]:
    plain = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return type(exc).__module__, type(exc).__qualname__, str(exc), plain


def unpack_error(packed: tuple[str, str, str, dict[str, Any]]) -> BaseException:
    """The error the child raised, as its own class where that class can be made again here."""
    module, name, message, attrs = packed
    try:
        cls: Any = importlib.import_module(module)
        for part in name.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise TypeError(name)
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        exc.__dict__.update(attrs)
        return exc
    except Exception:
        return ModelFailure(f"the engine failed: {name}: {message}")
