"""The chat page, the URIAL workbench, at ``/``: one HTML file of the package (no build step, no CDN)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()
CHAT_PAGE = resources.files("untuned.server.page").joinpath("chat.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(CHAT_PAGE)
