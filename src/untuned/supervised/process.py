"""The supervisor: the engine's child process, the calls in flight to it, and a new child when it dies."""

from __future__ import annotations

import itertools
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from queue import Empty, SimpleQueue
from typing import Any

from untuned.backends.protocol import LoadOptions as _LoadOptions
from untuned.errors import EngineRestarted, EngineUnavailable
from untuned.supervised.wire import EngineProcessStatus, EngineState, unpack_error

log = logging.getLogger(__name__)
MAX_FAILED_STARTS = 3

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
        self._streams: set[int] = set()  # the calls in flight that are answers being made (iter)
        self._lock = threading.Lock()  # guards _calls, _conn and the state
        self._send_lock = threading.Lock()
        self._ready = threading.Event()
        self.state: EngineState = "starting"
        self.restarts = 0
        self.last_exit: str | None = None
        self.crashes: dict[str, int] = {}  # how the process ended, counted
        self._recent_ends: list[float] = []  # times of the latest ends, for the back-off
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self.info = self._start()  # the first start raises the load error itself
        self._watcher = threading.Thread(target=self._watch, name="untuned-engine-supervisor", daemon=True)
        self._watcher.start()

    # --- starting and watching -------------------------------------------------------------------

    def _start(self) -> dict[str, Any]:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "untuned.supervised.child", str(theirs.fileno()), self.spec]
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
            streams = len(self._streams)
            self._calls.clear()
            self._streams.clear()
        process.wait()  # type: ignore[union-attr]
        self.last_exit = _ending(process.returncode)  # type: ignore[union-attr]
        self.crashes[self.last_exit] = self.crashes.get(self.last_exit, 0) + 1
        self.restarts += 1
        log.error("the engine process ended (%s); %d requests in flight failed; restarting it", self.last_exit, len(pending))
        error = (
            f"the engine restarted: its process ended ({self.last_exit}) while this request ran; the server goes on, "
            "retry the request"
        )
        for queue in pending:
            failed = EngineRestarted(error)
            failed.crash, failed.cause, failed.in_flight = self.restarts, self.last_exit, streams  # for the crash-loop guard
            queue.put(("err", failed))
        time.sleep(self._back_off())
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

    def _back_off(self) -> float:
        """Seconds to wait before starting again: none for a crash after a quiet minute, then 1, 2, 4 ... 30 s
        for each crash that follows the last within a minute (a model of tens of GB is not reloaded in a loop)."""
        now = time.monotonic()
        self._recent_ends = [t for t in self._recent_ends if now - t < 60.0] + [now]
        quick = len(self._recent_ends) - 1
        return 0.0 if not quick else min(30.0, 2.0 ** (quick - 1))

    def status(self) -> EngineProcessStatus:
        process = self._process
        pid = process.pid if process else None
        return EngineProcessStatus(self.state, self.restarts, pid, self.last_exit, dict(self.crashes))

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
                    if op == "iter":
                        self._streams.add(ident)
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
            self._streams.discard(ident)

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
