"""The remote backend against real servers on 127.0.0.1: llama-cpp-python's own (slow) and scripted faulty ones."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.servers import llama_cpp_server, scripted_server, sse_completion

from untuned import Assistant, LoadOptions, Sampling, load_backend
from untuned.errors import RemoteError
from untuned.prompt import load_prompt


@pytest.fixture(scope="module")
def server_url(gemma_path):
    with llama_cpp_server(gemma_path) as url:
        yield url


@pytest.mark.slow
def test_streams_from_llama_cpp_server(server_url):
    backend = load_backend(server_url)
    assert backend.name == "gemma-base"
    bot = Assistant(backend, load_prompt("helpful"), Sampling(max_tokens=48))
    completion = bot.ask("What is the capital of France?")
    chunks = list(completion)
    assert len(chunks) > 1
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"
    assert "````" not in completion.text


@pytest.mark.slow
def test_concurrent_requests_share_the_backend(server_url):
    backend = load_backend(server_url, LoadOptions(concurrency=2))
    bot = Assistant(backend, load_prompt("helpful"), Sampling(max_tokens=12))
    questions = ["What is the capital of France?", "What is the capital of Italy?", "What is the capital of Spain?"]
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda q: bot.ask(q).text, questions))
    assert "Paris" in answers[0] and "Rome" in answers[1] and "Madrid" in answers[2]


@pytest.mark.slow
def test_tokenize_through_the_server(server_url, gemma):
    backend = load_backend(server_url)
    text = "The capital of France is Paris."
    assert backend.tokenize(text) == gemma.tokenize(text)


@pytest.mark.slow
def test_cli_ask_against_the_server(server_url):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "untuned.cli",
            "ask",
            "--model",
            server_url,
            "--max-tokens",
            "40",
            "What is the capital of France?",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_retries_429_and_503_then_streams():
    def script(method, path, count, body):
        if path.endswith("/models"):
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode(),
            )
        if count == 2:
            return 429, {"Retry-After": "0", "Content-Type": "application/json"}, b'{"error": {"message": "slow down"}}'
        if count == 3:
            return 503, {"Content-Type": "application/json"}, b'{"error": {"message": "warming up"}}'
        return 200, {"Content-Type": "text/event-stream"}, sse_completion(["Par", "is is the ", "capital.", "\n````\n"])

    with scripted_server(script) as (url, seen):
        backend = load_backend(url, LoadOptions(max_retries=3))
        text = Assistant(backend, load_prompt("one-shot")).ask("Capital of France?").text
    assert text == "Paris is the capital."
    assert [path for _, path in seen] == ["/v1/models"] + ["/v1/completions"] * 3


def test_gives_up_with_a_clear_error():
    def script(method, path, count, body):
        if path.endswith("/models"):
            return 200, {"Content-Type": "application/json"}, b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'
        return 500, {"Content-Type": "application/json"}, b'{"error": {"message": "kaput"}}'

    with scripted_server(script) as (url, seen):
        backend = load_backend(url, LoadOptions(max_retries=1))
        with pytest.raises(RemoteError, match=r"refused the request \(500\): kaput"):
            Assistant(backend, load_prompt("one-shot")).ask("Hello?").text
    assert len(seen) == 1 + 2  # models, then the request and one retry


def test_unreachable_server():
    with pytest.raises(RemoteError, match="could not reach http://127.0.0.1:9/v1"):
        load_backend("http://127.0.0.1:9/v1", LoadOptions(max_retries=0))


def test_a_setting_the_backend_does_not_use_is_refused_by_name(gemma_path):
    """Each backend takes its own settings; one it does not use, given a value, is refused before
    anything loads or connects (port 9: nothing listens there), never ignored."""
    from untuned.errors import UntunedError

    with pytest.raises(UntunedError, match=r"the remote backend does not use n_ctx \(--n-ctx\), gpu_layers \(--gpu-layers\)"):
        load_backend("http://127.0.0.1:9/v1", LoadOptions(n_ctx=512, gpu_layers=2))
    with pytest.raises(UntunedError, match=r"the llama.cpp backend does not use device \(--device\); its settings are n_ctx"):
        load_backend(str(gemma_path), LoadOptions(device="cuda"))
    with pytest.raises(UntunedError, match=r"the transformers backend does not use kv_budget"):
        load_backend(str(gemma_path), LoadOptions(backend="transformers", kv_budget=1024))
    result = subprocess.run(
        [sys.executable, "-m", "untuned.cli", "ask", "Hi", "--model", "http://127.0.0.1:9/v1", "--kv-budget", "1024"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "the remote backend does not use kv_budget (--kv-budget)" in result.stderr
