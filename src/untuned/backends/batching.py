"""What the batching engines of the local backends share: the requests and the queue they wait in,
the thread that steps the batch, the counters, and the caller's side of a request, a stream that
cancels the request when it is closed.

A subclass says when there is work (:meth:`BatchingEngine._has_work`), does one step of it
(:meth:`BatchingEngine._step`: admit waiting requests, decode one batch, hand out what it made),
and ends what runs when a step fails or the engine closes.

Every engine still open when the interpreter exits is closed first, by an ``atexit`` hook: its thread
stops and the model's state is freed while Python is whole. Left to the interpreter's teardown, a
daemon thread inside native code could run on past the runtime it calls back into (a crash at exit,
after the work was done, seen once on a slower machine).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from queue import SimpleQueue

from untuned.backends.protocol import EngineStats, Sampling, StreamChunk
from untuned.constraint import Matcher
from untuned.errors import ModelClosedError, ModelFailure

log = logging.getLogger(__name__)
_OPEN: weakref.WeakSet[BatchingEngine] = weakref.WeakSet()  # engines started and not closed yet


class Request:
    """One answer to make: the prompt split at its cached prefix, how to sample, and where chunks go."""

    def __init__(
        self, prefix: tuple[int, ...], body: list[int], sampling: Sampling, limit: int, matcher: Matcher | None = None
    ) -> None:
        self.prefix, self.body, self.sampling, self.limit = prefix, body, sampling, limit
        self.matcher = matcher  # what holds the answer to sampling.json_schema or sampling.grammar (llguidance)
        self.events: SimpleQueue[StreamChunk | BaseException | None] = SimpleQueue()  # None ends the stream
        self.cancelled = False


class RequestStream:
    """The caller's side of a request: an iterator of its chunks (the first one carries the prompt's size),
    which :meth:`cancel` ends from any thread, in any state of the request (queued, evaluating its
    prompt, generating); closing it cancels too."""

    def __init__(self, engine: BatchingEngine, request: Request) -> None:
        self._engine, self._request = engine, request
        self._started = False

    def __iter__(self) -> RequestStream:
        return self

    def __next__(self) -> StreamChunk:
        request = self._request
        if not self._started:
            self._started = True
            return StreamChunk("", tokens=0, prompt_tokens=len(request.prefix) + len(request.body))
        if request.cancelled and request.events.empty():
            raise StopIteration
        event = request.events.get()
        if event is None:
            self.close()
            raise StopIteration
        if isinstance(event, BaseException):
            self.close()
            raise event
        return event

    def cancel(self) -> None:
        self._engine.cancel(self._request)

    close = cancel


class BatchingEngine:
    """A thread that steps a batch of requests over one model; see the module docstring. Thread-safe."""

    thread_name = "untuned-engine"

    def __init__(self, slots: int) -> None:
        self.counters = EngineStats(slots=slots)
        self._waiting: deque[Request] = deque()
        self._starved = False  # the first waiting request cannot start until a running one ends (a full KV pool)
        self._last_progress = time.monotonic()  # when the engine last did work (or got work while idle)
        self._closing = False
        self._work = threading.Condition()  # guards the queue, slot ownership and closing
        self._context_lock = threading.Lock()  # one user of the model's state at a time
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def _start(self) -> None:
        self._thread.start()
        _OPEN.add(self)

    # --- the callers' side ------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def busy_slots(self) -> int:
        raise NotImplementedError

    def stats(self) -> EngineStats:
        busy, waiting = self.busy_slots, self.waiting
        stalled = time.monotonic() - self._last_progress if busy or waiting else 0.0
        return dataclasses.replace(self.counters, busy_slots=busy, waiting=waiting, seconds_without_progress=stalled)

    def _progressed(self) -> None:
        """Note that the engine did work (evaluated a chunk of a prompt, made tokens): ``/health`` tells
        a stalled engine by the time since."""
        self._last_progress = time.monotonic()

    def stream(self, request: Request) -> RequestStream:
        """Queue ``request`` and return its stream of chunks; closing or cancelling the stream cancels it."""
        with self._work:
            if self._closing:
                raise ModelClosedError("the model has been closed")
            if not self._waiting and not self.busy_slots:
                self._progressed()  # idle until now: the time without progress counts from here
            self._waiting.append(request)
            self._work.notify_all()
        return RequestStream(self, request)

    def cancel(self, request: Request) -> None:
        """End ``request`` in whatever state it is: a waiting one leaves the queue now, a running one's slot is
        freed at the engine's next step; its stream ends at once. Thread-safe, idempotent."""
        with self._work:
            if request.cancelled:
                return
            request.cancelled = True
            try:
                self._waiting.remove(request)
                self._starved = False  # the request that waited for room may have been this one
            except ValueError:
                pass  # running (its slot is reaped at the next step) or done
            self._work.notify_all()
        request.events.put(None)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The model to oneself between two steps (scoring), generation paused meanwhile."""
        with self._context_lock:
            yield

    def close(self) -> None:
        """Stop the thread, end what runs or waits with ModelClosedError, free the model's state. Idempotent."""
        _OPEN.discard(self)
        with self._work:
            if self._closing:
                return
            self._closing = True
            self._work.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        with self._context_lock:
            self._end_running(ModelClosedError("the model was closed during the request"))
            while self._waiting:
                self._waiting.popleft().events.put(ModelClosedError("the model was closed before the request started"))
            self._release()

    # --- the engine thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._work:
                while not self._closing and not self._has_work():
                    self._work.wait()
                if self._closing:
                    return
            with self._context_lock:
                try:
                    self._step()
                except Exception as exc:  # a failure no single request could be blamed for: end the running ones
                    log.exception("engine step failed")
                    self._end_running(ModelFailure(f"the model failed: {exc}"))

    def _next_waiting(self) -> Request | None:
        """The first waiting request that still wants an answer (cancelled ones are ended here)."""
        with self._work:
            while self._waiting and self._waiting[0].cancelled:
                self._waiting.popleft().events.put(None)
            return self._waiting[0] if self._waiting else None

    def _has_work(self) -> bool:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError

    def _end_running(self, error: BaseException) -> None:
        """End every running request with ``error``."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the model's state (the engine has stopped)."""


@atexit.register
def _close_open_engines() -> None:
    """Close the engines nobody closed (see the module docstring)."""
    for engine in list(_OPEN):
        try:
            engine.close()
        except Exception:  # one engine's failure to close must not keep the others running
            log.exception("closing an engine at exit failed")
