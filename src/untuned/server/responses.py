"""What ``untuned serve`` answers: OpenAI's response records, their log-probabilities, and the chunks of
a stream."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from untuned.server.schema import Usage


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: with echo, the prompt's tokens first (the very first has no log-probability)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class _Choice(BaseModel):
    index: int = 0
    finish_reason: str | None


class ChatChoice(_Choice):
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None


class TextChoice(_Choice):
    text: str
    logprobs: CompletionLogprobs | None = None


class _Response(BaseModel):
    """What a chat and a text completion response share; ``object`` and ``choices`` differ."""

    id: str
    created: int
    model: str
    usage: Usage


class ChatResponse(_Response):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class CompletionResponse(_Response):
    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def _chunk(kind: str, ident: str, created: int, model: str, choice: dict[str, Any]) -> dict:
    return {
        "id": ident,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [{"index": 0, **choice, "logprobs": None}],
    }


def chat_chunk(ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> dict:
    return _chunk("chat.completion.chunk", ident, created, model, {"delta": delta, "finish_reason": finish})


def text_chunk(ident: str, created: int, model: str, text: str, finish: str | None) -> dict:
    return _chunk("text_completion", ident, created, model, {"text": text, "finish_reason": finish})
