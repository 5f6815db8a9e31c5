"""``untuned serve``: an OpenAI-compatible API and a web chat page over a URIAL-aligned base model.

>>> from untuned import Assistant
>>> from untuned.server import ServerConfig, create_app, serve
>>> serve(Assistant.load("default"), ServerConfig(model_name="gemma-3-270m"), port=8000)
"""

from __future__ import annotations

import logging

from untuned.assistant import Assistant
from untuned.server.app import create_app
from untuned.server.chat.conversation import build_conversation
from untuned.server.serving import ServerConfig

__all__ = ["ServerConfig", "build_conversation", "create_app", "serve"]

log = logging.getLogger(__name__)


def serve(
    assistant: Assistant,
    config: ServerConfig | None = None,
    *,
    aligned: Assistant | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Serve ``assistant`` with uvicorn until interrupted (binds 127.0.0.1 unless told otherwise)."""
    import uvicorn

    app = create_app(assistant, config, aligned=aligned)
    if host not in ("127.0.0.1", "localhost", "::1") and not (config and config.api_key):
        log.warning("serving on %s without --api-key: anyone who can reach this port can use the model", host)
    config = config or ServerConfig()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        limit_concurrency=config.max_connections,  # connections beyond get 503 at once
        timeout_keep_alive=5,  # an idle kept-alive connection is closed after this (the body has its own limit)
    )
