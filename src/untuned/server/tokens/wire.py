"""Wire records of ``/tokenize`` and ``/detokenize``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from untuned.server.wire import TokenId


class TokenizeRequest(BaseModel):
    """vLLM's and llama.cpp's server's shapes: ``prompt`` or ``content``; ``add_special_tokens`` or ``add_special``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = Field(None, max_length=256)
    prompt: str | None = Field(None, max_length=2_000_000)
    content: str | None = Field(None, max_length=2_000_000)
    add_special_tokens: bool | None = None
    add_special: bool | None = None

    @property
    def text(self) -> str:
        return self.prompt if self.prompt is not None else self.content or ""

    @property
    def special(self) -> bool:
        value = self.add_special_tokens if self.add_special_tokens is not None else self.add_special
        return True if value is None else value


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int | None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = Field(None, max_length=256)
    tokens: list[TokenId] = Field(..., max_length=1_000_000)


class DetokenizeResponse(BaseModel):
    prompt: str
    content: str
