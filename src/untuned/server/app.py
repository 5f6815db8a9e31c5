"""The FastAPI application: OpenAI-compatible endpoints over an :class:`~untuned.Assistant`.

``create_app`` only wires the parts: the shared :class:`~untuned.server.serving.Serving` in
``app.state``, one package per endpoint group (chat, completions, models, tokens, health, page, workbench,
pools: each its router and wire records, as vLLM's entrypoints), the error handlers, and the middleware
(host names, API key and body limit,
metrics of the routes, CORS).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from untuned.assistant import Assistant
from untuned.backends import TokenPieces
from untuned.server.chat import router as chat
from untuned.server.completions import router as completions
from untuned.server.errors import install_error_handlers
from untuned.server.guard import Guard
from untuned.server.health import router as health
from untuned.server.metrics import MetricsMiddleware, endpoint_names
from untuned.server.models import router as models
from untuned.server.page import router as page
from untuned.server.pools import router as pools
from untuned.server.serving import ServerConfig, Serving
from untuned.server.tokens import router as tokens
from untuned.server.wire import TOKEN_ID_MARK
from untuned.server.workbench import router as workbench

DOCS = ("/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")


def create_app(assistant: Assistant, config: ServerConfig | None = None, *, aligned: Assistant | None = None) -> FastAPI:
    """The ASGI app serving ``assistant`` (and ``aligned``, an instruct model requests reach by its
    name in ``model``). Run it with uvicorn, or use :func:`untuned.server.serve`."""
    config = config or ServerConfig()
    app = FastAPI(
        title="untuned", version="1", summary="An OpenAI-compatible chat API over a base model aligned in context (URIAL)."
    )
    app.state.serving = serving = Serving(assistant, config, aligned=aligned)
    groups = (chat, completions, models, tokens, health, page, workbench, pools)
    for group in groups:
        app.include_router(group.router)
    install_error_handlers(app)
    key = config.api_key.get_secret_value() if config.api_key else None
    app.openapi = lambda: openapi_schema(app, serving, bearer=bool(key))  # type: ignore[method-assign]
    # the last added is the outermost: CORS headers go on every answer, the Guard's 401, 403 and 413 too, and
    # the metrics count those. The docs hold no data: they open without the key, and their Authorize button
    # takes it for the calls they make.
    open_paths = ("/health", "/", *DOCS)
    guard = {
        "api_key": key,
        "max_body_bytes": config.max_body_bytes,
        "open_paths": open_paths,
        "body_timeout": config.body_timeout,
    }
    app.add_middleware(Guard, **guard, allowed_hosts=config.allowed_hosts)
    app.add_middleware(
        MetricsMiddleware, metrics=serving.metrics, endpoints=endpoint_names(r for g in groups for r in g.router.routes)
    )
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"], allow_headers=["*"])
    return app


def openapi_schema(app: FastAPI, serving: Serving, *, bearer: bool) -> dict:
    """The OpenAPI schema as this server takes requests: token ids bounded by the model's vocabulary, prompt
    set names from those it has (so an API fuzzer's requests get past validation, to the engine), and with a
    key, a bearer scheme on every operation (the docs' Authorize button)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        backend = serving.assistant.backend
        vocab = backend.vocab_size if isinstance(backend, TokenPieces) else None
        _bound_token_ids(schema, vocab)
        names = [*sorted(serving.prompts), "none"]
        for record in ("ChatRequest", "PromptRequest"):
            schema["components"]["schemas"][record]["properties"]["prompt"]["anyOf"][0]["enum"] = names
        if bearer:
            schema.setdefault("components", {})["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def _bound_token_ids(node: object, vocab: int | None) -> None:
    """Every integer marked as a token id gets the vocabulary's last id as its maximum (the mark removed)."""
    if isinstance(node, dict):
        if node.pop(TOKEN_ID_MARK, False) and vocab is not None:
            node["maximum"] = vocab - 1
        for value in node.values():
            _bound_token_ids(value, vocab)
    elif isinstance(node, list):
        for value in node:
            _bound_token_ids(value, vocab)
