"""Wire records of the OpenAI-compatible API that ``untuned serve`` speaks.

Requests accept (and ignore) fields we do not use, as OpenAI clients send many; a field we *do*
use must have the right type, or the request is answered 400 with an OpenAI-style error.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "developer", "user", "assistant"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"] = "text"
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Role
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


StopText = Annotated[str, Field(min_length=1, max_length=256)]


class _SamplingFields(BaseModel):
    """Fields both endpoints share; ``None`` means the server's default."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=256, description="Ignored beyond logging: the server has one model.")
    max_tokens: int | None = Field(None, ge=1, description="Most new tokens (capped by the context window).")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**31)
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = Field(None, description="A stop string or up to 4.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_SamplingFields):
    messages: list[Message] = Field(..., min_length=1, max_length=512)
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens; wins if both are set.")


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] = Field(..., description="Raw text for the base model to continue (no URIAL prompt).")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "untuned"
    prompt: str = Field(description="Name of the URIAL prompt set the server aligns with.")
    context_length: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class EngineLoad(BaseModel):
    """What the model's batching engine reports (local backends)."""

    slots: int
    busy_slots: int
    waiting: int
    requests: int
    generated_tokens: int
    prompt_tokens: int
    prefix_hits: int
    prefix_misses: int
    largest_batch: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    prompt: str
    parallel: int = Field(description="Requests answered at once.")
    active: int = Field(description="Requests being answered now.")
    waiting: int = Field(description="Requests waiting for a slot.")
    engine: EngineLoad | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class _Choice(BaseModel):
    index: int = 0
    finish_reason: str | None
    logprobs: None = None


class ChatChoice(_Choice):
    message: ChatMessageOut


class TextChoice(_Choice):
    text: str


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


def error_json(message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorBody(message=message, type=kind, param=param, code=code)).model_dump()


def chat_chunk(ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> dict:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def text_chunk(ident: str, created: int, model: str, text: str, finish: str | None) -> dict:
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }
