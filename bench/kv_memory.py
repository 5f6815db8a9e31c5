"""Resident memory of ``untuned serve`` against ``--parallel``: each slot its own KV stream of the whole
window (the exact default) vs one KV pool shared on demand (``--kv-budget``), on the bundled gemma.

For each setting: start the server, answer one chat question (so the prefix and a slot are used),
read the process's VmRSS, stop it. The window is 8192 tokens in both modes, and the pool holds 8192
tokens, so the pool is what llama-server's ``-c 8192 --kv-unified`` would be.

Run: .venv/bin/python bench/kv_memory.py
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from smoke import sized

WINDOW, POOL = sized(8192, 2048), sized(8192, 2048)  # the URIAL prefix and an answer fit either way


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vm_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))


def resident_mb(parallel: int, pool: int | None) -> tuple[float, str]:
    port = free_port()
    extra = ["--kv-budget", str(pool)] if pool else []
    command = [sys.executable, "-m", "untuned", "serve", *f"--port {port} --parallel {parallel} --n-ctx {WINDOW}".split(), *extra]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"the server did not start: {server.communicate()[1][-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16}
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120).raise_for_status()
        engine = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()["engine_process"]
        # the model lives in the engine's process (untuned serve's default): both processes counted
        rss = sum(vm_rss_kb(pid) for pid in (server.pid, engine and engine["pid"]) if pid)
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1]
    summary = next((line.removeprefix("untuned: ") for line in log.splitlines() if "KV cache" in line), "")
    return rss / 1024, summary


def main() -> None:
    console = Console(width=140)
    table = Table(title=f"untuned serve, resident memory after one answer (window {WINDOW} tokens)")
    for column in ("--parallel", "own KV streams (MB)", f"--kv-budget {POOL} (MB)", "saved"):
        table.add_column(column, justify="right")
    for parallel in sized((1, 4, 8), (1,)):
        own, own_summary = resident_mb(parallel, None)
        pooled, pool_summary = resident_mb(parallel, POOL)
        table.add_row(str(parallel), f"{own:.0f}", f"{pooled:.0f}", f"{own - pooled:.0f} MB")
        console.print(f"  {own_summary}\n  {pool_summary}")
    console.print(table)


if __name__ == "__main__":
    main()
