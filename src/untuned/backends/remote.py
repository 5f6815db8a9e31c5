"""Remote backend: any server with an OpenAI-compatible ``/v1/completions`` endpoint.

vLLM, SGLang, TGI, llama.cpp's server and llama-cpp-python's server all qualify. The official
``openai`` client does the HTTP work, including retries with exponential backoff and jitter
on 429, 5xx, timeouts and dropped connections (honouring ``Retry-After``). Prefix caching is
the server's business (vLLM's automatic prefix caching, SGLang's radix cache).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np

from untuned.backends import LoadOptions, ModelSpec, Sampling, StreamChunk, TokenScores, check_score_request
from untuned.backends.protocol import REMOTE_OPTIONS
from untuned.conversation import RenderedPrompt
from untuned.errors import BackendUnavailableError, RemoteError, UnsupportedOperation, UntunedError

log = logging.getLogger(__name__)

# Token endpoints of the common servers, tried in order: (path from the server root, request body).
# vLLM, SGLang, llama.cpp's server and untuned serve: /tokenize (special tokens as asked);
# llama-cpp-python's server: /extras/tokenize (always adds BOS).
_TOKENIZE_ROUTES = (
    (
        "/tokenize",
        lambda model, text, special: {
            "model": model,
            "prompt": text,
            "content": text,
            "add_special_tokens": special,
            "add_special": special,
        },
    ),
    ("/extras/tokenize", lambda model, text, special: {"input": text}),
)


NO_KEY = "untuned-no-key"  # what servers that ask for no key are sent: the client needs one


def openai_client(base_url: str, *, api_key_env: str, timeout: float, max_retries: int):
    """The ``openai`` client for an OpenAI-compatible server, its key from ``api_key_env`` (if set)."""
    import openai

    key = os.environ.get(api_key_env) or NO_KEY
    return openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)


class RemoteBackend:
    """A model served over HTTP. Thread-safe; at most ``concurrency`` requests in flight."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 4,
    ) -> None:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - openai is a core dependency
            raise BackendUnavailableError("the remote backend needs the openai package: pip install openai") from exc
        self._openai = openai
        self.base_url = base_url.rstrip("/")
        self.client = openai_client(self.base_url, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries)
        self._slots = threading.BoundedSemaphore(concurrency)
        self.parallel = concurrency
        self._tokenize_route: tuple[str, Any] | None = None
        self._special_prefix: list[int] | None = None
        self.context_length: int | None = None
        self.name = model or self._discover_model()

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> RemoteBackend:
        options = options.narrow(REMOTE_OPTIONS, "remote")  # type: ignore[assignment]
        return cls(
            spec.location,
            model=options.remote_model,
            api_key_env=options.api_key_env,
            concurrency=max(options.concurrency, options.parallel),
            timeout=options.timeout,
            max_retries=options.max_retries,
        )

    def _discover_model(self) -> str:
        try:
            listing = self.client.models.list()
        except self._openai.APIConnectionError as exc:
            raise RemoteError(
                f"could not reach {self.base_url} ({exc}). Is the server running, and is the URL's /v1 right?"
            ) from exc
        except self._openai.APIStatusError as exc:
            raise RemoteError(
                f"{self.base_url}/models answered {exc.status_code}; pass the model name with --remote-model "
                f"(and the API key through the environment variable named by --api-key-env if it is a 401)."
            ) from exc
        models = list(listing.data)
        if not models:
            raise RemoteError(f"{self.base_url} serves no models; pass one with --remote-model.")
        extra = models[0].model_extra or {}
        self.context_length = extra.get("max_model_len") or extra.get("context_length")
        if len(models) > 1:
            log.warning("%s serves %d models; using %s (choose with --remote-model)", self.base_url, len(models), models[0].id)
        return models[0].id

    # --- tokens ----------------------------------------------------------------------------

    def _server_root(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Tokenize through the server's own endpoint (vLLM, SGLang, llama.cpp server, llama-cpp-python)."""
        if self._special_prefix is None:
            self._special_prefix = self._tokenize_raw("", special=True)  # what the server adds, e.g. BOS
        ids = self._tokenize_raw(text, special=False)
        plain = ids[len(self._special_prefix) :] if ids[: len(self._special_prefix)] == self._special_prefix else ids
        return self._special_prefix + plain if add_special else plain

    def _tokenize_raw(self, text: str, *, special: bool) -> list[int]:
        routes = [self._tokenize_route] if self._tokenize_route else list(_TOKENIZE_ROUTES)
        headers = {"Authorization": f"Bearer {self.client.api_key}"}
        for route in routes:
            path, body = route
            try:
                reply = httpx.post(self._server_root() + path, json=body(self.name, text, special), headers=headers, timeout=30)
            except httpx.HTTPError:
                continue
            if reply.status_code == 200 and isinstance(reply.json().get("tokens"), list):
                self._tokenize_route = route
                return [int(t["id"]) if isinstance(t, dict) else int(t) for t in reply.json()["tokens"]]
        raise UnsupportedOperation(f"{self.base_url} offers no tokenize endpoint (tried /tokenize and /extras/tokenize).")

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Detokenize through the server's /detokenize (vLLM, SGLang, llama.cpp's server, untuned serve)."""
        headers = {"Authorization": f"Bearer {self.client.api_key}"}
        try:
            reply = httpx.post(
                self._server_root() + "/detokenize",
                json={"model": self.name, "tokens": [int(t) for t in tokens]},
                headers=headers,
                timeout=30,
            )
        except httpx.HTTPError as exc:
            raise RemoteError(f"could not reach {self.base_url} to detokenize ({exc})") from exc
        found = reply.json() if reply.status_code == 200 else {}
        text = found.get("prompt", found.get("content"))
        if not isinstance(text, str):
            raise UnsupportedOperation(f"{self.base_url} offers no /detokenize endpoint")
        return text

    # --- generation --------------------------------------------------------------------------

    def stream(self, prompt: RenderedPrompt, sampling: Sampling) -> Iterator[StreamChunk]:
        constrained = sampling.json_schema is not None or sampling.grammar is not None
        if constrained or sampling.logprobs or sampling.ignore_eos or sampling.logit_bias:
            raise UnsupportedOperation(
                "the remote backend does not pass json_schema, a grammar (tool calls), logprobs, ignore_eos or logit_bias "
                "on; ask the server itself"
            )
        if prompt.special_tokens:
            raise UnsupportedOperation("the remote backend sends text; a prompt with special tokens needs a local backend")
        return self._stream(list(prompt.ids) if prompt.ids is not None else prompt.text, sampling)

    def _stream(self, text: str | list[int], sampling: Sampling) -> Iterator[StreamChunk]:
        extra: dict[str, Any] = {}
        if sampling.repetition_penalty != 1.0:
            # vLLM, SGLang and TGI call it repetition_penalty; llama.cpp's servers repeat_penalty.
            extra["repetition_penalty"] = sampling.repetition_penalty
            extra["repeat_penalty"] = sampling.repetition_penalty
        if sampling.top_k:
            extra["top_k"] = sampling.top_k
        with self._slots:
            try:
                response = self.client.completions.create(
                    model=self.name,
                    prompt=text,
                    max_tokens=sampling.max_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    seed=sampling.seed,
                    stop=list(sampling.stop) or None,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body=extra or None,
                )
            except self._openai.APIConnectionError as exc:
                raise RemoteError(f"could not reach {self.base_url} after retries ({exc}).") from exc
            except self._openai.APIStatusError as exc:
                raise RemoteError(f"{self.base_url} refused the request ({exc.status_code}): {_detail(exc)}") from exc
            with response:
                try:
                    for chunk in response:
                        usage = getattr(chunk, "usage", None)
                        if usage is not None and not chunk.choices:
                            yield StreamChunk("", tokens=0, prompt_tokens=usage.prompt_tokens)
                        for choice in chunk.choices:
                            finish = choice.finish_reason if choice.finish_reason in ("stop", "length") else None
                            yield StreamChunk(choice.text or "", tokens=1 if choice.text else 0, finish=finish)
                except (self._openai.APIError, httpx.HTTPError) as exc:
                    raise RemoteError(f"the stream from {self.base_url} broke off: {exc}") from exc

    top_k_only = True  # a server tells the top-k of each position, not whole distributions (TopKDistributions)

    def score(self, tokens: Sequence[int], *, start: int = 1, top_k: int = 5) -> TokenScores:
        """Prompt log-probabilities from the server: ``/v1/completions`` with the tokens as the prompt,
        ``echo`` and ``logprobs=top_k`` (vLLM and ``untuned serve`` answer so). A token outside the
        server's top-k gets rank ``top_k + 1`` (its true rank is beyond k), so with ``top_k >= 3`` the
        unshifted / marginal / shifted categories are exact."""
        ids = check_score_request(tokens, start, self.context_length)
        if top_k < 3:
            raise UntunedError("scoring through a server needs top_k >= 3 for exact token categories")
        with self._slots:
            try:
                response = self.client.completions.create(
                    model=self.name,
                    prompt=ids,
                    max_tokens=1,
                    echo=True,
                    logprobs=top_k,
                    temperature=0.0,
                    extra_body={"return_tokens_as_token_ids": True},
                )
            except self._openai.APIStatusError as exc:
                raise RemoteError(f"{self.base_url} refused to score ({exc.status_code}): {_detail(exc)}") from exc
            except self._openai.APIConnectionError as exc:
                raise RemoteError(f"could not reach {self.base_url} after retries ({exc}).") from exc
        found = response.choices[0].logprobs if response.choices else None
        if found is None or not found.token_logprobs or len(found.token_logprobs) < len(ids):
            raise RemoteError(
                f"{self.base_url} did not return the prompt's log-probabilities (it needs /v1/completions "
                "with echo and logprobs, as vLLM and untuned serve give)."
            )
        echoed = [_token_id(t) for t in found.tokens[: len(ids)]]
        if echoed != ids:
            raise RemoteError(
                f"{self.base_url} scored other tokens than it was sent (it must return token ids: return_tokens_as_token_ids)"
            )
        rows = range(start, len(ids))
        logprobs = np.array([found.token_logprobs[i] for i in rows], dtype=np.float64)
        top_ids = np.full((len(rows), top_k), -1, dtype=np.int64)
        top_logprobs = np.full((len(rows), top_k), -np.inf)
        ranks = np.empty(len(rows), dtype=np.int64)
        for row, position in enumerate(rows):
            ranked = sorted(((lp, _token_id(t)) for t, lp in (found.top_logprobs[position] or {}).items()), reverse=True)
            ranked = ranked[:top_k]
            for column, (lp, token) in enumerate(ranked):
                top_ids[row, column], top_logprobs[row, column] = token, lp
            own = ids[position]
            ranks[row] = 1 + sum(lp > logprobs[row] for lp, _ in ranked) if own in {t for _, t in ranked} else top_k + 1
        return TokenScores(np.asarray(ids[start:]), logprobs, ranks, top_ids, top_logprobs)

    def distributions(self, tokens: Sequence[int], *, start: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise UnsupportedOperation(
            "a server gives each position's top-k, not whole distributions: KL through a server "
            "is computed over the top-k (shift does so by itself)"
        )

    def close(self) -> None:
        self.client.close()


def _token_id(name: str) -> int:
    if not name.startswith("token_id:"):
        raise RemoteError(f"the server named a token {name!r}, not by its id: it must support return_tokens_as_token_ids")
    return int(name[len("token_id:") :])


def _detail(exc: Exception) -> str:
    """The server's own error message, where it sent one."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        message = inner.get("message") if isinstance(inner, dict) else body.get("message") or body.get("detail")
        if message:
            return str(message)
    return getattr(exc, "message", None) or str(exc)
