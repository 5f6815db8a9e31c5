"""HTTP calls of the tests, each with a generous timeout (httpx's default of 5 s fails on a slow or busy
machine, while a model answers): ``http.get``, ``http.post``, ``http.stream`` take httpx's arguments."""

from __future__ import annotations

import httpx

TIMEOUT = 120.0  # seconds for any one call: the machine may be 4x slower than this one, and busy


def get(url: str, **options) -> httpx.Response:
    return httpx.get(url, **{"timeout": TIMEOUT, **options})


def post(url: str, **options) -> httpx.Response:
    return httpx.post(url, **{"timeout": TIMEOUT, **options})


def stream(method: str, url: str, **options):
    return httpx.stream(method, url, **{"timeout": TIMEOUT, **options})


def delete(url: str, **options) -> httpx.Response:
    return httpx.delete(url, **{"timeout": TIMEOUT, **options})
