"""P4: judging 200 items against a judge server that takes 200 ms per request: --concurrency 16 vs 1.

The judge is a real HTTP server on 127.0.0.1 (threaded, OpenAI chat-completions shape) that
sleeps 200 ms and answers a valid five-aspect verdict. Each side judges the same 200 answers
into a fresh verdict file with no cache, through the same `Judge.run` the CLI uses.
Run: .venv/bin/python bench/judge_concurrency.py
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from rich.console import Console
from rich.table import Table
from smoke import sized

from untuned.answers import AnswerItem
from untuned.judge import HttpJudgeModel, Judge, judge_mode
from untuned.judge.mode import ASPECTS

ITEMS = sized(200, 4)
LATENCY = sized(0.2, 0.01)
VERDICT = json.dumps({a: {"rationale": "fine", "score": "4"} for a in ASPECTS})


class SlowJudge(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(LATENCY)
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "judge",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": VERDICT}, "finish_reason": "stop"}],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    items = [AnswerItem(id=str(i), query=f"Question {i}?", answer=f"Answer {i}.") for i in range(ITEMS)]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for concurrency in (1, 16):
            judging = Judge(HttpJudgeModel(url, "judge"), judge_mode("multi"), None)
            summary = judging.run(items, Path(folder) / f"c{concurrency}.jsonl", concurrency=concurrency)
            assert summary.done == ITEMS, summary
            results[concurrency] = summary.seconds
    server.shutdown()
    table = Table("concurrency", "items", "seconds", "items/s")
    for concurrency, seconds in results.items():
        table.add_row(str(concurrency), str(ITEMS), f"{seconds:.2f}", f"{ITEMS / seconds:.1f}")
    console = Console(width=100)
    console.print(table)
    console.print(f"speed-up, 16 vs 1: {results[1] / results[16]:.1f}x (target >= 10x; ideal 16x)")


if __name__ == "__main__":
    main()
