"""``GET /health`` (the load, for people and probes), ``GET /metrics`` (Prometheus) and the chat page at ``/``."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, PlainTextResponse

from untuned.server.metrics import prometheus_text
from untuned.server.schema import ERRORS, Health
from untuned.server.serving import Serving, serving

router = APIRouter()
CHAT_PAGE = resources.files("untuned.server").joinpath("chat.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(CHAT_PAGE)


@router.get("/health", response_model=Health)
async def health(serve: Serving = Depends(serving)) -> Health:
    gate = serve.gate
    return Health(
        model=serve.model,
        prompt=serve.assistant.prompt.name,
        parallel=serve.parallel,
        active=gate.active,
        waiting=gate.waiting,
        engine=serve.engine_load(),
    )


@router.get("/metrics", response_class=PlainTextResponse, responses=ERRORS)
async def metrics(serve: Serving = Depends(serving)) -> PlainTextResponse:
    """The load, counters and latency histograms in Prometheus' text format."""
    text = prometheus_text(serve.parallel, serve.gate.active, serve.gate.waiting, serve.engine_load(), serve.metrics)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
