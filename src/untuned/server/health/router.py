"""``GET /health`` (the load and the engine's state, for people and probes) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import PlainTextResponse

from untuned.server.health.wire import Health
from untuned.server.metrics import prometheus_text
from untuned.server.serving import Serving, serving
from untuned.server.wire import ERRORS

router = APIRouter()


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Not ok: see status"}})
async def health(response: Response, serve: Serving = Depends(serving)) -> Health:
    """The load and the engine's state: 200 when ok; 503 when the engine is stalled (work waiting, no progress
    for --stall-after seconds), restarting after a crash, failed, or not answering."""
    report = await serve.health()
    if report.status != "ok":
        response.status_code = 503
    return report


@router.get("/metrics", response_class=PlainTextResponse, responses=ERRORS)
async def metrics(serve: Serving = Depends(serving)) -> PlainTextResponse:
    """The load, counters and latency histograms in Prometheus' text format."""
    report = await serve.health()
    text = prometheus_text(serve.parallel, report, serve.metrics)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
