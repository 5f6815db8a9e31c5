"""Real HTTP servers for tests: llama-cpp-python's own OpenAI-compatible server, and a
deliberately misbehaving one for faults that a healthy server never shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from helpers import free_port, http


@contextmanager
def server_process(
    command: list[str], ready_url: str, *, name: str, wait: float = 120, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run a server command (with ``env`` added to the environment) until ``ready_url`` answers 200; stop it afterwards."""
    log = tempfile.TemporaryFile()  # a pipe would fill up with llama.cpp's log and block the server
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + wait
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{name} exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                if http.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {wait:.0f} s")
            time.sleep(0.3)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@contextmanager
def llama_cpp_server(model: Path, *, n_ctx: int = 4096) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` on 127.0.0.1 and yield its /v1 base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--model_alias",
        "gemma-base",
        "--interrupt_requests",
        "False",
    ]  # queue concurrent requests instead of cutting streams
    base = f"http://127.0.0.1:{port}/v1"
    with server_process(command, f"{base}/models", name="llama_cpp.server"):
        yield base


@contextmanager
def untuned_server(*options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``untuned serve`` (the real CLI, default model) on 127.0.0.1; yield its root URL."""
    port = free_port()
    command = [sys.executable, "-m", "untuned", "serve", "--port", str(port), "--n-ctx", "4096", *options]
    root = f"http://127.0.0.1:{port}"
    with server_process(command, f"{root}/health", name="untuned serve", env=env):
        yield root


FUZZ_CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def run_schemathesis(url: str, cwd, *, examples: int) -> int:
    """Every phase (examples, coverage, fuzzing, and the stateful phase that follows the OpenAPI links from
    /tokenize into /detokenize and /v1/completions), with the conformance checks beside the 5xx one."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--max-examples", str(examples)]
    command += ["--checks", FUZZ_CHECKS, "--request-timeout", "120", "--generation-database", "none"]
    command += ["--seed", "20261206", "--no-color", "--workers", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=cwd)
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary
    generated = int(re.search(r"(\d+) generated", summary).group(1))
    assert re.search(rf"{generated} passed", summary), summary
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected / (\d+) total", result.stdout)
    assert links and int(links.group(1)) == int(links.group(2)) == int(links.group(3)) >= 2, summary  # every link followed
    return generated


def sse_completion(text_pieces: list[str], model: str = "scripted") -> bytes:
    """An OpenAI-style streamed /v1/completions body."""
    events = []
    for index, piece in enumerate(text_pieces):
        finish = "stop" if index == len(text_pieces) - 1 else None
        chunk = {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}],
        }
        events.append(f"data: {json.dumps(chunk)}\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


Reply = tuple[int, dict[str, str], bytes]


@contextmanager
def scripted_server(script: Callable[[str, str, int, bytes], Reply]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A real HTTP server on 127.0.0.1 whose replies come from ``script(method, path, n, body)``,
    n being the number of requests seen so far. Yields (base URL, log of (method, path))."""
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                seen.append((self.command, self.path))
                count = len(seen)
            status, headers, reply = script(self.command, self.path, count, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            try:
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                pass

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
