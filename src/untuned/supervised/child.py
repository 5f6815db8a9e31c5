"""The engine's process: one backend, loaded here, its calls each answered on a thread of their own
(``python -m untuned.supervised.child FD SPEC OPTIONS``, started by the supervisor)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from untuned.backends.protocol import Backend
from untuned.backends.protocol import LoadOptions as _LoadOptions
from untuned.supervised.wire import CAPABILITIES, pack_error


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


if __name__ == "__main__":
    child_main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
