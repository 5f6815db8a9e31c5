"""Fair, bounded access to the model, and the thread that runs each request on it.

The model answers ``capacity`` requests at once (its parallel slots, decoded in one batch).
:class:`Gate` admits requests first come, first served, refuses new ones once ``max_waiting`` are
queued, and estimates a Retry-After from recent request times. :class:`Job` runs a completion on a
worker thread, hands its chunks to the event loop, and stops between two tokens when the client goes
away or its time is up, so its slot is free for the next request at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from untuned.assistant import Completion
from untuned.errors import EngineRestarted
from untuned.server.errors import QueueFull, RequestTimeout

log = logging.getLogger(__name__)

EventKind = Literal["text", "done", "error"]


class Gate:
    """``capacity`` requests on the model at once, the rest waiting in arrival order (at most ``max_waiting``)."""

    def __init__(self, max_waiting: int, capacity: int = 1) -> None:
        self.max_waiting = max_waiting
        self.capacity = capacity
        self.waiting = 0
        self.active = 0
        self.admitted = 0  # active + waiting, counted when a request is let in (before any await)
        self._slots = asyncio.Semaphore(capacity)  # wakes its waiters in arrival order
        self._recent: deque[float] = deque(maxlen=16)

    def retry_after(self) -> int:
        typical = sum(self._recent) / len(self._recent) if self._recent else 1.0
        return max(1, math.ceil(typical * (self.waiting + 1) / self.capacity))

    async def enter(self, timeout: float) -> None:
        """Wait for a slot; :class:`QueueFull` at once if ``capacity + max_waiting`` requests are in
        already, ``RequestTimeout`` after ``timeout``. The check and the count happen with no await
        between them, so a burst cannot pass the check together."""
        if self.admitted >= self.capacity + self.max_waiting:
            raise QueueFull(self.retry_after())
        self.admitted += 1
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout)
        except asyncio.TimeoutError:
            self.admitted -= 1
            raise RequestTimeout(f"waited {timeout:.0f} s in the queue") from None
        except BaseException:  # the client went away while waiting
            self.admitted -= 1
            raise
        finally:
            self.waiting -= 1
        self.active += 1

    def leave(self, seconds: float) -> None:
        self._recent.append(seconds)
        self.active -= 1
        self.admitted -= 1
        self._slots.release()


class Job:
    """One completion running on its own thread; :meth:`events` yields what it produces.

    The gate is left by the worker thread itself when the completion has really stopped, so the
    next request never overlaps a cancelled one.
    """

    def __init__(self, start: Callable[[], Completion], gate: Gate, *, on_crash: Callable | None = None) -> None:
        self._start = start
        self._gate = gate
        self._on_crash = on_crash  # called on the event loop with (job, EngineRestarted) before the error event
        self.delivered = False  # set once something of the answer has gone to the client
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[EventKind, object]] = asyncio.Queue()
        self.cancel = threading.Event()
        self.completion: Completion | None = None
        self._began = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="untuned-job", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the job from the event loop: the model frees the request's place at once, in any state
        (queued, evaluating its prompt, generating), where the backend's stream can be cancelled."""
        self.cancel.set()
        completion = self.completion
        if completion is not None:
            completion.cancel()

    def _put(self, kind: EventKind, value: object = None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop has closed (server shutting down)
            self.cancel.set()

    def _run(self) -> None:
        try:
            completion = self._start()
            self.completion = completion
            if self.cancel.is_set():  # stopped while the request was being made
                completion.cancel()
            chunks = iter(completion)
            try:
                for chunk in chunks:
                    if self.cancel.is_set():
                        log.info("request cancelled; the model is free again")
                        break
                    self._put("text", chunk)
            finally:
                chunks.close()  # closes the backend's generator: it stops decoding now
            self._put("done")
        except Exception as exc:  # handed to the event loop, which answers the client
            if isinstance(exc, EngineRestarted) and self._on_crash is not None:
                try:
                    self._loop.call_soon_threadsafe(self._on_crash, self, exc)
                except RuntimeError:
                    pass
            self._put("error", exc)
        finally:
            seconds = time.perf_counter() - self._began
            try:
                self._loop.call_soon_threadsafe(self._gate.leave, seconds)
            except RuntimeError:
                pass

    async def events(self, deadline: float) -> AsyncIterator[tuple[EventKind, object]]:
        """Yield ``("text", str)`` events, then one ``("done", None)`` or ``("error", exc)``."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                kind, value = await asyncio.wait_for(self._queue.get(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                self.stop()
                raise RequestTimeout("the answer took longer than the server's time limit") from None
            yield kind, value
            if kind != "text":
                return


async def _client_gone(request: Request) -> None:
    """Returns when the client has closed its connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def cancel_on_disconnect(endpoint: Callable) -> Callable:
    """Run ``endpoint`` (which takes a ``raw: Request``) until it returns or its client goes away, whichever
    is first. A client that leaves while its request waits for the gate or for its whole answer cancels the
    handler: the gate's place is given back and the job stopped at once, in whatever state it is (a stream
    watches for the client itself once it has begun)."""

    @functools.wraps(endpoint)
    async def guarded(*args, raw: Request, **kwargs):
        work = asyncio.ensure_future(endpoint(*args, raw=raw, **kwargs))
        gone = asyncio.ensure_future(_client_gone(raw))
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            gone.cancel()
            return work.result()
        work.cancel()
        try:
            await work
        except asyncio.CancelledError:
            pass
        log.info("the client went away; its request was cancelled")
        return Response(status_code=499)  # nobody reads it: nginx's "client closed request"

    return guarded
