"""ASGI middleware in front of every route: the Host a request addresses, bearer-token auth and a
request body size limit.

The Host header must name the server (``allowed_hosts``: the bound address, localhost, names given
with ``--allow-host``), else 403: a web page whose DNS name is made to point at 127.0.0.1 (DNS
rebinding) would otherwise drive the local server from the browser and read its answers.
The key is compared in constant time (:func:`hmac.compare_digest`). Bodies are read up to the
limit before the app sees them (a chunked upload that grows past it is refused too), within
``body_timeout`` seconds (a client that sends its body slowly, or never, is answered 408 instead of
holding a connection), then replayed to the app. A JSON body with a lone UTF-16 surrogate (``"\\ud800"``,
valid JSON that no UTF-8 text can hold: the tokenizer would fail on it) is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from untuned.server.crash_guard import Caller, current_caller
from untuned.server.wire import error_json


def host_name(header: bytes) -> str:
    """The host of a Host header, lower case, without its port (``[::1]:8000`` is ``::1``)."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(body: bytes) -> str | None:
    """The path of the first string (or key) in a JSON body that holds a lone surrogate; None if none (or if
    the body is not JSON: the app says so). Paired surrogates are one character once read, so any left is lone."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, object]] = [("body", found)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return f"{path} (a key)"
                stack.append((f"{path}.{key}" if path != "body" else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}", item) for index, item in enumerate(value))
    return None


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        open_paths: tuple[str, ...],
        allowed_hosts: tuple[str, ...] | None = None,
        body_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes
        self.open_paths = open_paths
        self.allowed_hosts = None if allowed_hosts is None else frozenset(host_name(h.encode()) for h in allowed_hosts)

    def _host_allowed(self, scope: Scope) -> str | None:
        """None when the request's Host is one of the server's names, else the host it named."""
        if self.allowed_hosts is None:
            return None
        host = host_name(dict(scope.get("headers") or []).get(b"host", b""))
        return None if host in self.allowed_hosts else host

    def _authorized(self, scope: Scope) -> bool:
        if self.api_key is None or scope["path"] in self.open_paths or scope.get("method") == "OPTIONS":
            return True
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        # compare_digest on equal-length inputs: compare the whole header against the expected one
        return hmac.compare_digest(scheme.lower() + b" " + token.strip(), b"bearer " + self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stranger = self._host_allowed(scope)
        if stranger is not None:
            names = ", ".join(sorted(self.allowed_hosts or ()))
            body = error_json(
                f"this server answers only requests addressed to {names}, not {stranger!r} "
                "(start it with --allow-host NAME to add a name)",
                kind="permission_error",
                code="host_not_allowed",
            )
            await JSONResponse(body, status_code=403)(scope, receive, send)
            return
        if not self._authorized(scope):
            body = error_json("a valid API key is required: send 'Authorization: Bearer <key>'", code="invalid_api_key")
            await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        messages = await self._body(scope, receive, send)
        if messages is None:
            return
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        where = lone_surrogate(body)
        if where is not None:
            problem = error_json(
                f"{where}: the text holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair), which no UTF-8 "
                "text can hold; send the character itself or its whole pair",
                param=where,
            )
            await JSONResponse(problem, status_code=400)(scope, receive, send)
            return

        client = scope.get("client")
        current_caller.set(Caller.of(client[0] if client else "unknown", body, scope.get("path", "")))

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> list[Message] | None:
        """The body's messages, read up to the size limit within the time limit; None when refused (answered)."""
        messages: list[Message] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                body = error_json(f"the request body did not arrive within {self.body_timeout:.0f} s", code="body_timeout")
                await JSONResponse(body, status_code=408, headers={"Connection": "close"})(scope, receive, send)
                return None
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return None
            if not message.get("more_body", False):
                return messages

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = error_json(f"request body over {self.max_body_bytes} bytes", code="request_too_large")
        await JSONResponse(body, status_code=413)(scope, receive, send)
