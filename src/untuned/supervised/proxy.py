"""The backend the server uses: a proxy with exactly the capabilities of the backend in the engine's process."""

from __future__ import annotations

from collections.abc import Iterator

from untuned.backends.protocol import LoadOptions as _LoadOptions
from untuned.supervised.process import EngineProcess, RemoteStream
from untuned.supervised.wire import EngineProcessStatus


class SupervisedBackend:
    """A backend whose model runs in a supervised child process (see the module docstring). Made by
    :func:`supervise`, with the capabilities of the backend in the child."""

    def __init__(self, engine: EngineProcess) -> None:
        self.engine = engine
        self.name: str = engine.info["name"]
        self.context_length: int | None = engine.info["context_length"]

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self.engine.call("tokenize", text, add_special=add_special)

    def detokenize(self, tokens) -> str:
        return self.engine.call("detokenize", [int(t) for t in tokens])

    def stream(self, prompt, sampling) -> RemoteStream:
        return self.engine.iterate("stream", prompt, sampling)

    def score(self, tokens, *, start: int = 1, top_k: int = 5):
        return self.engine.call("score", [int(t) for t in tokens], start=start, top_k=top_k)

    def distributions(self, tokens, *, start: int = 1) -> Iterator:
        return self.engine.iterate("distributions", [int(t) for t in tokens], start=start)

    def engine_status(self) -> EngineProcessStatus:
        return self.engine.status()

    def close(self) -> None:
        self.engine.close()


class _ChatTemplated:
    def chat_prompt(self, messages, *, shared: int = 0):
        return self.engine.call("chat_prompt", messages, shared=shared)

    def tokenize_prompt(self, prompt) -> list[int]:
        return self.engine.call("tokenize_prompt", prompt)

    def template_text(self) -> str | None:
        return self.engine.call("template_text")


class _Batched:
    @property
    def parallel(self) -> int:
        return self.engine.info["parallel"]


class _CountsWork:
    def stats(self):
        """The engine's counters; EngineUnavailable at once while it restarts, or after 5 s without an answer."""
        return self.engine.call("stats", wait=False, timeout=5.0)


class _TokenPieces:
    @property
    def vocab_size(self) -> int:
        return self.engine.info["vocab_size"]

    def piece(self, token: int) -> bytes:
        cache = self.__dict__.setdefault("_pieces", {})
        found = cache.get(token)
        if found is None:
            found = cache[token] = self.engine.call("piece", int(token))
        return found


class _TopKDistributions:
    @property
    def top_k_only(self) -> bool:
        return self.engine.info["top_k_only"]


class _BatchScoring:
    def score_batch(self, sequences, *, starts, top_k: int = 5):
        return self.engine.call("score_batch", sequences, starts=starts, top_k=top_k)


class _TargetScoring:
    def score_targets(self, tokens, targets, *, start: int = 1, top_k: int = 5):
        return self.engine.call("score_targets", [int(t) for t in tokens], [int(t) for t in targets], start=start, top_k=top_k)


class _SchemaConstrained:
    def check_constraint(self, *, json_schema: str | None = None, grammar: str | None = None) -> None:
        self.engine.call("check_constraint", json_schema=json_schema, grammar=grammar)


class _MemoryReporting:
    @property
    def kv_summary(self) -> str:
        return self.engine.info["kv_summary"]


class _BatchInvariance:
    @property
    def batch_invariant(self) -> bool:
        return self.engine.call("batch_invariant")

    @batch_invariant.setter
    def batch_invariant(self, on: bool) -> None:
        self.engine.set("batch_invariant", on)


_MIXINS = {
    "ChatTemplated": _ChatTemplated,
    "Batched": _Batched,
    "CountsWork": _CountsWork,
    "TokenPieces": _TokenPieces,
    "TopKDistributions": _TopKDistributions,
    "BatchScoring": _BatchScoring,
    "TargetScoring": _TargetScoring,
    "SchemaConstrained": _SchemaConstrained,
    "MemoryReporting": _MemoryReporting,
    "BatchInvariance": _BatchInvariance,
}


def supervise(spec: str, options: _LoadOptions | None = None, *, ready_timeout: float = 600.0) -> SupervisedBackend:
    """Load ``spec`` in a supervised child process; the proxy has the capabilities of the backend there.
    A load error is raised here, as :func:`~untuned.backends.load_backend` raises it."""
    engine = EngineProcess(spec, options or _LoadOptions(), ready_timeout=ready_timeout)
    mixins = tuple(_MIXINS[name] for name in engine.info["capabilities"])
    cls = type("SupervisedBackend", (SupervisedBackend, *mixins), {"__module__": __name__})
    return cls(engine)


def supervised_status(backend: object) -> EngineProcessStatus | None:
    """The engine process's status of a supervised backend; None for any other."""
    return backend.engine_status() if isinstance(backend, SupervisedBackend) else None
