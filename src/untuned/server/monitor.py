"""The engine's figures kept fresh by a thread of their own, so that ``/health`` and ``/metrics`` answer from
memory: they take no worker thread and wait on nothing, however busy the server is (a burst of long
tokenizations once kept /health from answering for 30 s)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable

from untuned.backends import CountsWork
from untuned.errors import EngineUnavailable
from untuned.server.health.wire import EngineLoad

log = logging.getLogger(__name__)
EVERY = 0.5  # seconds between two readings


@dataclasses.dataclass(frozen=True)
class Reading:
    """The engine's load at ``at`` (time.monotonic), or why it could not be read."""

    load: EngineLoad | None
    problem: str | None
    at: float


class Monitor:
    """Reads ``backend.stats()`` every EVERY seconds on a daemon thread, and at once when asked
    (:meth:`fresh`); :attr:`latest` is the last reading."""

    def __init__(self, backend: object) -> None:
        self.latest = Reading(None, None, time.monotonic())
        self.wake = threading.Event()
        if not isinstance(backend, CountsWork):
            return
        watcher = threading.Thread(target=_watch, args=(weakref.ref(self), backend.stats), daemon=True, name="untuned-monitor")
        watcher.start()

    async def fresh(self, within: float = 0.25) -> Reading:
        """A reading made after this call, if the thread makes one within ``within`` seconds; else the latest
        (a wedged or restarting engine never holds the caller longer)."""
        asked = time.monotonic()
        self.wake.set()
        while self.latest.at < asked and time.monotonic() - asked < within:
            await asyncio.sleep(0.005)
        return self.latest

    def read(self, stats: Callable) -> None:
        try:
            load, problem = EngineLoad(**dataclasses.asdict(stats())), None
        except EngineUnavailable as exc:
            load, problem = None, str(exc)
        except Exception as exc:  # a closed or failing engine: said, never raised into the thread
            load, problem = None, f"the engine's figures could not be read: {exc}"
        self.latest = Reading(load, problem, time.monotonic())


def _watch(monitor: weakref.ref, stats: Callable) -> None:
    """Until the monitor is gone (its server with it)."""
    while True:
        found = monitor()
        if found is None:
            return
        found.read(stats)
        wake = found.wake
        del found
        wake.wait(EVERY)
        wake.clear()
