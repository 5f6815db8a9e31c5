"""What the tests share: paths, CLI output as words, free ports; servers (helpers.servers), tiny
models (helpers.tiny) and scripted judges (helpers.judges) in their modules."""

from __future__ import annotations

import asyncio
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def plain(text: str) -> str:
    """CLI output as one line of words: line breaks and the boxes of typer's error panels removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_async(coroutine):
    """``asyncio.run`` in a thread of its own: the browser tests keep an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
