"""The HTTP side of errors: the errors only ``untuned serve`` raises, and the handlers that turn every
error into OpenAI's error shape with an honest status (4xx: what the client sent; 5xx: the server's).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from untuned.errors import (
    ConstraintError,
    ContextOverflowError,
    CrashLoopRefused,
    EngineRestarted,
    EngineUnavailable,
    ModelFailure,
    UntunedError,
)
from untuned.server.chat.wire import ChatRequest
from untuned.server.completions.wire import CompletionRequest
from untuned.server.wire import error_json

log = logging.getLogger(__name__)


class BadRequest(UntunedError):
    """A request to ``untuned serve`` is malformed or cannot be answered (HTTP 400, or ``status``)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


class QueueFull(UntunedError):
    """``untuned serve`` has as many requests waiting as it allows (HTTP 503 with Retry-After)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class RequestTimeout(UntunedError):
    """A request ran past the server's per-request time limit (HTTP 504)."""


_FIELD = re.compile(r"^[a-z_]+$")
_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "constrained-str", "constrained-int"}


def _path(loc: tuple) -> str:
    """A pydantic error location as the request's field path (``messages.0.content``), without the type
    tags of union members (``str``, ``list[int]``, ``function-after[...]``)."""
    parts = [str(p) for p in loc if p != "body" and (isinstance(p, int) or (_FIELD.match(str(p)) and p not in _TAGS))]
    return ".".join(parts)


def _sent(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(errors: list[dict], descriptions: dict[str, str]) -> tuple[str, str | None]:
    """One message, in our words, for a request that failed validation: the field, what was sent and
    what is accepted (``descriptions``: field name → its description, for the fields with one value)."""
    if not errors:
        return "invalid request", None
    # a union's members each add an error: keep the most specific place (the longest path)
    first = max(errors, key=lambda e: len(_path(e["loc"]).split(".")) if _path(e["loc"]) else 0)
    field = _path(first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unsupported field '{field}': untuned's API has no such field (it is refused, not ignored)", field or None
    if first["type"] == "missing":
        return f"{field} is required", field or None
    name = field.rsplit(".", 1)[-1]
    if descriptions.get(name, "").startswith("Not supported"):
        accepted = descriptions[name].removeprefix("Not supported").strip(":. ") or "this server does not support it"
        return f"{field}: {_sent(first.get('input'))} is not supported; {accepted}", field
    wanted = []
    for error in (e for e in errors if _path(e["loc"]) == field):
        message = str(error["msg"])
        if error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
            return (f"{field}: {message}" if field else message), field or None
        message = message.replace("Input should be ", "").replace("Input ", "").replace("String should have ", "a string with ")
        message = message.replace("List should have ", "a list with ")
        wanted.append(message[:1].lower() + message[1:])
    accepted = " or ".join(dict.fromkeys(wanted))
    return f"{field or 'body'}: {_sent(first.get('input'))} is not accepted; expected {accepted}", field or None


def install_error_handlers(app: FastAPI) -> None:
    descriptions = {
        name: field.description or ""
        for record in (ChatRequest, CompletionRequest)
        for name, field in record.model_fields.items()
    }

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if errors and errors[0].get("type") == "json_invalid":
            return JSONResponse(error_json(f"the body is not valid JSON: {errors[0]['msg']}"), status_code=400)
        message, param = explain(errors, descriptions)
        return JSONResponse(error_json(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = getattr(exc, "headers", None)
        return JSONResponse(error_json(str(exc.detail), kind=kind), status_code=exc.status_code, headers=headers)

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(error_json(str(exc), param=exc.param, code=exc.code), status_code=exc.status)

    @app.exception_handler(QueueFull)
    async def busy(_: Request, exc: QueueFull) -> JSONResponse:
        body = error_json(str(exc), kind="server_busy", code="queue_full")
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestTimeout)
    async def too_slow(_: Request, exc: RequestTimeout) -> JSONResponse:
        return JSONResponse(error_json(str(exc), kind="timeout", code="timeout"), status_code=504)

    @app.exception_handler(EngineRestarted)
    @app.exception_handler(EngineUnavailable)
    async def engine_down(_: Request, exc: UntunedError) -> JSONResponse:
        code = "engine_restarted" if isinstance(exc, EngineRestarted) else "engine_unavailable"
        return JSONResponse(error_json(str(exc), kind="server_error", code=code), status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(ModelFailure)
    async def model_failed(_: Request, exc: ModelFailure) -> JSONResponse:
        return JSONResponse(error_json(str(exc), kind="server_error", code="model_failure"), status_code=500)

    _install_request_handlers(app)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return JSONResponse(error_json(f"internal error: {type(exc).__name__}", kind="server_error"), status_code=500)


def _install_request_handlers(app: FastAPI) -> None:
    """What a request asked for that cannot be: past the window, a constraint that cannot hold, a crash loop."""

    @app.exception_handler(ContextOverflowError)
    async def overflow(_: Request, exc: ContextOverflowError) -> JSONResponse:
        body = error_json(str(exc), param="prompt", code="context_length_exceeded")
        return JSONResponse(body, status_code=400)

    @app.exception_handler(ConstraintError)
    async def unconstrainable(_: Request, exc: ConstraintError) -> JSONResponse:
        return JSONResponse(error_json(str(exc), param="response_format"), status_code=400)

    @app.exception_handler(CrashLoopRefused)
    async def crash_loop(_: Request, exc: CrashLoopRefused) -> JSONResponse:
        body = error_json(str(exc), code="crashed_the_engine" if exc.status == 400 else "too_many_crashes")
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(body, status_code=exc.status, headers=headers)
