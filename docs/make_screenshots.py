"""Screenshots of the chat page's views (docs/page-*.png) on the bundled gemma base, in Debian's headless
Chromium: the chat, side by side with the base model's unaligned answer, the shift of every token, the
settings, the prompt the model sees, and the examples editor.

Run: .venv/bin/python docs/make_screenshots.py
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "untuned", "serve", "--port", str(port), "--parallel", "2"])
    try:
        for _ in range(300):
            try:
                httpx.get(f"{root}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(root)
            page.wait_for_function("document.getElementById('promptset').options.length > 1")
            page.evaluate("localStorage.clear()")
            page.click("#show-settings")
            page.fill("#max_tokens", "96")
            page.click("#show-settings")
            page.check("#compare")
            page.fill("#input", "How do I make a good cup of tea?")
            page.keyboard.press("Enter")
            page.wait_for_function(
                "[...document.querySelectorAll('.answer')].every(a => a.dataset.state === 'done')", timeout=300_000
            )
            page.screenshot(path=DOCS / "page-side-by-side.png")
            page.click(".answer .shift")
            page.wait_for_function("document.querySelectorAll('.answer .tok').length > 0", timeout=300_000)
            page.screenshot(path=DOCS / "page-shift.png")
            for button, name in (("#show-settings", "settings"), ("#show-prompt", "prompt"), ("#show-editor", "editor")):
                page.click(button)
                time.sleep(1.0)
                page.screenshot(path=DOCS / f"page-{name}.png")
            browser.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
