"""A backend in a child process of its own, supervised: a native crash there ends the engine, never the
process that serves clients.

``untuned serve`` runs its models this way (as Ollama runs llama.cpp's server, and vLLM V1 its engine
core): the child loads the weights and answers calls over a socket; this process keeps none of the
model but what the child reports at start-up (its name, window, vocabulary size, capabilities). If the
child dies (``abort``, a segmentation fault, the out-of-memory killer), every call in flight fails with
:class:`~untuned.errors.EngineRestarted`, the supervisor starts a new child, and later calls wait for
it (at most ``ready_timeout``) instead of failing. A child that dies before it is ready is retried with
a growing pause; after ``MAX_FAILED_STARTS`` in a row the engine is marked failed and calls are refused
with :class:`~untuned.errors.EngineUnavailable`.

The proxy has exactly the capabilities of the backend in the child (:func:`supervise` builds its class
from them), so callers check them with ``isinstance`` as for any backend. Streams are
:class:`~untuned.backends.CancellableStream`: cancelling one ends it here at once and in the child.

Wire: :class:`multiprocessing.connection.Connection` over a socket pair. Parent to child
``(op, id, payload)`` with op ``call`` (a method's value), ``iter`` (a method's iterator, item by
item), ``set`` (an attribute), ``cancel``; child to parent ``(kind, id, value)`` with kind ``ok``,
``item``, ``err`` (an error packed by class name, message and plain attributes), and ``ready`` /
``failed`` once at start-up.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from queue import Empty, SimpleQueue
from typing import Any, Literal

from untuned.backends.protocol import (
    Backend,
    Batched,
    BatchInvariance,
    BatchScoring,
    ChatTemplated,
    CountsWork,
    MemoryReporting,
    SchemaConstrained,
    TokenPieces,
    TopKDistributions,
)
from untuned.backends.protocol import LoadOptions as _LoadOptions
from untuned.errors import EngineRestarted, EngineUnavailable, ModelFailure

log = logging.getLogger(__name__)
MAX_FAILED_STARTS = 3
CAPABILITIES = {
    "ChatTemplated": ChatTemplated,
    "Batched": Batched,
    "CountsWork": CountsWork,
    "TokenPieces": TokenPieces,
    "TopKDistributions": TopKDistributions,
    "BatchScoring": BatchScoring,
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


# --- errors across the socket ------------------------------------------------------------------------


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


# --- the child -----------------------------------------------------------------------------------------


class _Child:
    """The engine process: one backend, its calls each on a thread of their own."""

    def __init__(self, conn: Connection, backend: Backend) -> None:
        self.conn, self.backend = conn, backend
        self._send_lock = threading.Lock()
        self._streams: dict[int, Any] = {}
        self._cancelled: set[int] = set()

    def send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def serve(self) -> None:
        while True:
            try:
                op, ident, payload = self.conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if op == "close":
                return
            if op == "cancel":
                self._cancel(ident)
                continue
            worker = {"call": self._call, "iter": self._iterate, "set": self._set}[op]
            threading.Thread(target=worker, args=(ident, payload), daemon=True).start()

    def _call(self, ident: int, payload: tuple) -> None:
        method, args, kwargs = payload
        try:
            value = getattr(self.backend, method)
            value = value(*args, **kwargs) if callable(value) else value
        except BaseException as exc:
            self.send(("err", ident, pack_error(exc)))
            return
        self.send(("ok", ident, value))

    def _set(self, ident: int, payload: tuple) -> None:
        name, value = payload
        try:
            setattr(self.backend, name, value)
        except BaseException as exc:
            self.send(("err", ident, pack_error(exc)))
            return
        self.send(("ok", ident, None))

    def _iterate(self, ident: int, payload: tuple) -> None:
        method, args, kwargs = payload
        try:
            items = getattr(self.backend, method)(*args, **kwargs)
            self._streams[ident] = items
            if ident in self._cancelled:
                self._cancel(ident)
            for item in items:
                if ident in self._cancelled:
                    break
                self.send(("item", ident, item))
            close = getattr(items, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self.send(("err", ident, pack_error(exc)))
            return
        finally:
            self._streams.pop(ident, None)
            self._cancelled.discard(ident)
        self.send(("ok", ident, None))

    def _cancel(self, ident: int) -> None:
        self._cancelled.add(ident)
        stream = self._streams.get(ident)
        cancel = getattr(stream, "cancel", None)
        if cancel is not None:
            cancel()


def _describe(backend: Backend) -> dict[str, Any]:
    """What the parent keeps of the backend: its plain attributes and which capabilities it has."""
    capabilities = [name for name, protocol in CAPABILITIES.items() if isinstance(backend, protocol)]
    info: dict[str, Any] = {"name": backend.name, "context_length": backend.context_length, "capabilities": capabilities}
    for name in ("parallel", "vocab_size", "kv_summary", "top_k_only"):
        if hasattr(backend, name):
            info[name] = getattr(backend, name)
    return info


def child_main(fd: int, spec: str, options_json: str) -> None:
    """The engine process: load the model, say it is ready, answer calls until the parent goes."""
    from untuned.backends.registry import load_backend

    logging.basicConfig(level=logging.WARNING, format="untuned engine: %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which closes the engine in turn
    conn = Connection(fd)
    try:
        backend = load_backend(spec, _LoadOptions.model_validate_json(options_json))
    except BaseException as exc:
        conn.send(("failed", 0, pack_error(exc)))
        return
    conn.send(("ready", 0, _describe(backend)))
    try:
        _Child(conn, backend).serve()
    finally:
        backend.close()


# --- the parent ----------------------------------------------------------------------------------------


_END = object()  # a call's queue gets this when its iterator was cancelled here


class RemoteStream:
    """An iterator whose items come from the child; :meth:`cancel` ends it here at once and there."""

    def __init__(self, engine: EngineProcess, ident: int, queue: SimpleQueue) -> None:
        self._engine, self._ident, self._queue = engine, ident, queue
        self._done = False

    def __iter__(self) -> RemoteStream:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "item":
            return value
        self._done = True
        self._engine.forget(self._ident)
        if kind == "err":
            raise value
        raise StopIteration

    def cancel(self) -> None:
        if not self._done:
            self._engine.cancel(self._ident)
            self._queue.put(("ok", _END))

    close = cancel


class EngineProcess:
    """The child process and the calls in flight to it; restarts the child when it dies."""

    def __init__(self, spec: str, options: _LoadOptions, *, ready_timeout: float = 600.0) -> None:
        self.spec, self.options, self.ready_timeout = spec, options, ready_timeout
        self._ids = itertools.count(1)
        self._calls: dict[int, SimpleQueue] = {}
        self._lock = threading.Lock()  # guards _calls, _conn and the state
        self._send_lock = threading.Lock()
        self._ready = threading.Event()
        self.state: EngineState = "starting"
        self.restarts = 0
        self.last_exit: str | None = None
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self.info = self._start()  # the first start raises the load error itself
        self._watcher = threading.Thread(target=self._watch, name="untuned-engine-supervisor", daemon=True)
        self._watcher.start()

    # --- starting and watching -------------------------------------------------------------------

    def _start(self) -> dict[str, Any]:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "untuned.backends.supervised", str(theirs.fileno()), self.spec]
        command.append(self.options.model_dump_json())
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(),))
        theirs.close()
        conn = Connection(ours.detach())
        try:
            kind, _, value = conn.recv()
        except (EOFError, OSError):
            process.wait()
            conn.close()
            ended = _ending(process.returncode)
            raise EngineUnavailable(f"the engine process ended while loading {self.spec} ({ended})") from None
        if kind == "failed":
            process.wait()
            conn.close()
            raise unpack_error(value)
        with self._lock:
            self._process, self._conn, self.state = process, conn, "running"
        self._ready.set()
        return value

    def _watch(self) -> None:
        """Read the child's answers; when it dies, fail what was in flight and start another."""
        while True:
            conn = self._conn
            try:
                kind, ident, value = conn.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                if not self._restart():
                    return
                continue
            queue = self._calls.get(ident)
            if queue is not None:
                queue.put((kind, unpack_error(value) if kind == "err" else value))

    def _restart(self) -> bool:
        """After the child ended: False when closing, else True once a new child runs (or the engine failed)."""
        with self._lock:
            if self.state == "closed":
                return False
            self._ready.clear()
            self.state = "restarting"
            process, pending = self._process, list(self._calls.values())
            self._calls.clear()
        process.wait()  # type: ignore[union-attr]
        self.last_exit = _ending(process.returncode)  # type: ignore[union-attr]
        self.restarts += 1
        log.error("the engine process ended (%s); %d requests in flight failed; restarting it", self.last_exit, len(pending))
        error = (
            f"the engine restarted: its process ended ({self.last_exit}) while this request ran; the server goes on, "
            "retry the request"
        )
        for queue in pending:
            queue.put(("err", EngineRestarted(error)))
        for attempt in range(MAX_FAILED_STARTS):
            try:
                self._start()
                log.warning("the engine process is running again (restart %d)", self.restarts)
                return True
            except Exception as exc:
                log.error("restarting the engine failed (%s)", exc)
                time.sleep(2**attempt)
        with self._lock:
            self.state = "failed"
        self._ready.set()  # waiting callers see the failure at once
        return False

    def status(self) -> EngineProcessStatus:
        process = self._process
        return EngineProcessStatus(self.state, self.restarts, process.pid if process else None, self.last_exit)

    # --- calls -------------------------------------------------------------------------------------

    def _open(self, op: str, payload: tuple, *, wait: bool) -> tuple[int, SimpleQueue]:
        """Register a call and send it. The state is checked and the call registered under one lock, so a
        call is either failed by the restart that ends its child or sent to the next child, never lost."""
        ident, queue = next(self._ids), SimpleQueue()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if wait and not self._ready.wait(max(0.0, deadline - time.monotonic())):
                raise EngineUnavailable(f"the engine did not come back within {self.ready_timeout:.0f} s")
            with self._lock:
                state = self.state
                if state == "running":
                    self._calls[ident] = queue
                    conn = self._conn
                    break
            if not wait or state in ("failed", "closed"):
                ended = f" (its process last ended: {self.last_exit})" if self.last_exit else ""
                raise EngineUnavailable(f"the engine is {state}{ended}")
        try:
            with self._send_lock:
                conn.send((op, ident, payload))  # type: ignore[union-attr]
        except (OSError, ValueError) as exc:  # the child just died; the watcher fails the call
            log.debug("sending to the engine failed: %s", exc)
        return ident, queue

    def forget(self, ident: int) -> None:
        with self._lock:
            self._calls.pop(ident, None)

    def call(self, method: str, *args: Any, timeout: float | None = None, wait: bool = True, **kwargs: Any) -> Any:
        """The value of ``backend.method(*args, **kwargs)`` in the child (or of an attribute ``method``)."""
        ident, queue = self._open("call", (method, args, kwargs), wait=wait)
        try:
            kind, value = queue.get(timeout=timeout)
        except Empty:
            raise EngineUnavailable(f"the engine did not answer {method} within {timeout} s") from None
        finally:
            self.forget(ident)
        if kind == "err":
            raise value
        return value

    def set(self, name: str, value: Any) -> None:
        ident, queue = self._open("set", (name, value), wait=True)
        try:
            kind, found = queue.get()
        finally:
            self.forget(ident)
        if kind == "err":
            raise found

    def iterate(self, method: str, *args: Any, **kwargs: Any) -> RemoteStream:
        ident, queue = self._open("iter", (method, args, kwargs), wait=True)
        return RemoteStream(self, ident, queue)

    def cancel(self, ident: int) -> None:
        with self._lock:
            conn, running = self._conn, ident in self._calls and self.state == "running"
        if running:
            try:
                with self._send_lock:
                    conn.send(("cancel", ident, None))  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass
        self.forget(ident)

    def close(self) -> None:
        with self._lock:
            if self.state == "closed":
                return
            self.state = "closed"
            conn, process = self._conn, self._process
        self._ready.set()
        try:
            with self._send_lock:
                conn.send(("close", 0, None))  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if conn is not None:
            conn.close()


def _ending(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# --- the proxy -----------------------------------------------------------------------------------------


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


class _SchemaConstrained:
    def check_schema(self, schema: str) -> None:
        self.engine.call("check_schema", schema)


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


if __name__ == "__main__":
    child_main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
