"""What ``/metrics`` exports, in Prometheus' text format: the load (gauges), the engine's counters,
requests by endpoint and status, and latency histograms (whole request, time to the first token),
as vLLM's and llama.cpp's servers export them.

:class:`MetricsMiddleware` times every request to the API's endpoints from its first byte in to its
last byte out (a stream included); the time to the first token is recorded by the serving code.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from untuned.server.health.wire import Health

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
UNCOUNTED = ("/health", "/metrics")  # the probes: counting them would count the counting


def endpoint_names(routes) -> dict[str, str]:
    """The API's endpoints counted by /metrics, path to label: every route in the OpenAPI schema (its name)
    but the probes, so a new router is counted without a word here."""
    return {r.path: r.name for r in routes if getattr(r, "include_in_schema", False) and r.path not in UNCOUNTED}


class Histogram:
    """Cumulative-bucket histogram of seconds."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def lines(self, name: str, labels: str) -> list[str]:
        running, lines = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts):
            running += count
            lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
        return [*lines, f"{name}_sum{{{labels}}} {self.total:.6f}", f"{name}_count{{{labels}}} {running}"]


class Metrics:
    """Requests by (endpoint, status), and per endpoint the request and first-token latencies."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.ttft: dict[str, Histogram] = {}

    def finished(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        self.latency.setdefault(endpoint, Histogram()).observe(seconds)

    def first_token(self, endpoint: str, seconds: float) -> None:
        self.ttft.setdefault(endpoint, Histogram()).observe(seconds)


class MetricsMiddleware:
    """Counts and times the requests to the API's endpoints (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, endpoints: dict[str, str]) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoints.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.finished(endpoint, status, time.perf_counter() - started)


_GAUGES = (
    ("untuned_parallel_slots", "gauge", "Requests the server answers at once."),
    ("untuned_requests_active", "gauge", "Requests being answered now."),
    ("untuned_requests_waiting", "gauge", "Requests waiting for a slot."),
    ("untuned_healthy", "gauge", "1 when /health says ok, else 0 (stalled, restarting, failed)."),
    ("untuned_engine_restarts_total", "counter", "Times the engine's process ended and was started again."),
    ("untuned_engine_busy_slots", "gauge", "Slots of the model's batch holding a request."),
    ("untuned_engine_requests_total", "counter", "Requests the model's engine has started."),
    ("untuned_engine_generated_tokens_total", "counter", "Tokens generated."),
    ("untuned_engine_prompt_tokens_total", "counter", "Prompt tokens evaluated (prefixes and bodies)."),
    ("untuned_engine_prefix_cache_hits_total", "counter", "Requests whose URIAL prefix was already evaluated."),
    ("untuned_engine_prefix_cache_misses_total", "counter", "Prefixes not resident (evaluated, or loaded from disk)."),
    ("untuned_engine_prefix_disk_loads_total", "counter", "Prefixes loaded from the disk cache instead of evaluated."),
    ("untuned_engine_draft_proposed_total", "counter", "Speculative decoding: tokens guessed."),
    ("untuned_engine_draft_accepted_total", "counter", "Speculative decoding: guesses the model confirmed."),
)


def prometheus_text(parallel: int, health: Health, metrics: Metrics) -> str:
    values = [parallel, health.active, health.waiting, int(health.status == "ok")]
    process = health.engine_process
    values.append(process.restarts if process is not None else 0)
    engine = health.engine
    if engine is not None:
        values += [
            engine.busy_slots,
            engine.requests,
            engine.generated_tokens,
            engine.prompt_tokens,
            engine.prefix_hits,
            engine.prefix_misses,
            engine.prefix_loads,
            engine.draft_proposed,
            engine.draft_accepted,
        ]
    lines = []
    for (name, kind, text), value in zip(_GAUGES, values):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    lines += [
        "# HELP untuned_engine_crashes_total Times the engine's process ended, by how.",
        "# TYPE untuned_engine_crashes_total counter",
    ]
    crashes = health.engine_process.crashes if health.engine_process is not None else {}
    lines += [f'untuned_engine_crashes_total{{cause="{cause}"}} {n}' for cause, n in sorted(crashes.items())]
    for name, value, text in (
        ("untuned_crash_guard_refused_total", health.crash_guard.refused, "Requests refused for ending the engine."),
        ("untuned_crash_guard_retried_total", health.crash_guard.retried, "Requests retried after a crash not theirs."),
    ):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"]
    lines += [
        "# HELP untuned_http_requests_total Requests answered, by endpoint and HTTP status.",
        "# TYPE untuned_http_requests_total counter",
    ]
    lines += [f'untuned_http_requests_total{{endpoint="{e}",status="{s}"}} {n}' for (e, s), n in sorted(metrics.requests.items())]
    for name, text, table in (
        ("untuned_request_duration_seconds", "Seconds from a request's arrival to its last byte.", metrics.latency),
        ("untuned_time_to_first_token_seconds", "Seconds from a request's start to its first token.", metrics.ttft),
    ):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
        for endpoint, histogram in sorted(table.items()):
            lines += histogram.lines(name, f'endpoint="{endpoint}"')
    return "\n".join(lines) + "\n"
