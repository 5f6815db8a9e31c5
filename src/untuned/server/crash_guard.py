"""The crash-loop guard: a request that ended the engine is not run again, nor is a client whose requests
keep ending it.

Each request is known by its fingerprint (a hash of its body) and its client (the peer's address), set by
the :class:`~untuned.server.guard.Guard` for the request's task. When the engine's process dies of a
native fault (a signal other than SIGKILL, or an exit code), every request in flight gets
``EngineRestarted``, and:

* a request that was the only one in flight is to blame: its fingerprint is blocked (400 the next time it
  is sent) and its client is charged with a crash;
* with several in flight, each is a suspect: a suspect is retried transparently where nothing has been sent
  to its client yet (a whole answer, or a stream before its first event), one retry at a time; a
  fingerprint suspected in two crashes is blocked and its client charged;
* a client charged with ``per_client`` crashes within ``window`` seconds gets 429 until the oldest leaves
  the window.

SIGKILL is not a request's doing that this process can tell (the operator's ``kill -9``, or the
out-of-memory killer): the engine restarts and the requests in flight are retried, with no blame.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import Counter, OrderedDict, deque
from contextvars import ContextVar
from dataclasses import dataclass

from untuned.errors import CrashLoopRefused, EngineRestarted

KEPT = 4096  # fingerprints remembered (blocked or suspected), least recently used dropped first
EXTERNAL = ("signal SIGKILL",)  # endings that are not a request's fault as far as this process can tell


@dataclass(frozen=True)
class Caller:
    """Who sent the request being handled, and what: the peer's address and a hash of the body."""

    client: str
    fingerprint: str

    @classmethod
    def of(cls, client: str, body: bytes, path: str) -> Caller:
        return cls(client, hashlib.sha256(path.encode() + b"\0" + body).hexdigest()[:32])


current_caller: ContextVar[Caller | None] = ContextVar("untuned_caller", default=None)


class CrashGuard:
    """See the module docstring. Lives on the event loop (no locks: nothing awaits inside a decision)."""

    def __init__(self, *, per_client: int = 3, window: float = 600.0) -> None:
        self.per_client, self.window = per_client, window
        self.blocked: OrderedDict[str, str] = OrderedDict()  # fingerprint -> why
        self.suspected: OrderedDict[str, int] = OrderedDict()  # fingerprint -> crashes it was in flight for
        self.charged: dict[str, deque[float]] = {}  # client -> times of the crashes it was blamed for
        self.by_cause: Counter[str] = Counter()  # crashes, by how the engine's process ended
        self.refused = 0  # requests refused by this guard
        self.retried = 0  # requests retried transparently after a crash
        self._seen: set[int] = set()  # crash numbers already counted
        self.retry_lock = asyncio.Lock()  # suspects are retried one at a time

    def check(self, caller: Caller | None) -> None:
        """CrashLoopRefused for a blocked request or a client over its crashes."""
        if caller is None:
            return
        why = self.blocked.get(caller.fingerprint)
        if why is not None:
            self.refused += 1
            raise CrashLoopRefused(f"this request is not run again: {why}; change the request", status=400)
        times = self._recent(caller.client)
        if len(times) >= self.per_client:
            self.refused += 1
            wait = math.ceil(times[0] + self.window - time.monotonic())
            raise CrashLoopRefused(
                f"requests from {caller.client} ended the engine {len(times)} times in the last {self.window:.0f} s; "
                f"refused for {wait} s",
                status=429,
                retry_after=max(1, wait),
            )

    def after_crash(self, caller: Caller | None, error: EngineRestarted, *, sent: bool) -> bool:
        """Record a crash this request was in flight for; True when it may be retried transparently (nothing
        ``sent`` yet, and not to blame)."""
        crash = getattr(error, "crash", None)
        cause = getattr(error, "cause", None) or "unknown"
        if crash is not None and crash not in self._seen:
            self._seen.add(crash)
            self.by_cause[cause] += 1
        if cause in EXTERNAL or caller is None:
            return not sent
        alone = getattr(error, "in_flight", 2) <= 1
        count = self.suspected.pop(caller.fingerprint, 0) + 1
        if alone or count >= 2:
            reason = "it ended the engine's process" if alone else "it was in flight for two of the engine's crashes"
            self._block(caller, f"{reason} ({cause})")
            return False
        self.suspected[caller.fingerprint] = count
        _bound(self.suspected)
        return not sent

    def _block(self, caller: Caller, why: str) -> None:
        self.blocked[caller.fingerprint] = why
        _bound(self.blocked)
        self._recent(caller.client).append(time.monotonic())

    def _recent(self, client: str) -> deque[float]:
        times = self.charged.setdefault(client, deque())
        while times and times[0] < time.monotonic() - self.window:
            times.popleft()
        return times

    def summary(self) -> dict[str, object]:
        """What /health and /metrics show."""
        clients = sum(len(self._recent(c)) >= self.per_client for c in list(self.charged))
        return {
            "crashes": dict(self.by_cause),
            "blocked_requests": len(self.blocked),
            "blocked_clients": clients,
            "refused": self.refused,
            "retried": self.retried,
        }


def _bound(table: OrderedDict) -> None:
    while len(table) > KEPT:
        table.popitem(last=False)
