"""Wire records of ``POST /v1/completions``: the request (a prompt, a list of prompts or of token ids), the
response, its log-probabilities and stream chunks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from untuned.server.chat.wire import N_WITHOUT_STREAM
from untuned.server.wire import Choice, ResponseBase, SamplingFields, TokenId, Whole, chunk

PromptText = Annotated[str, Field(min_length=1)]


PromptIds = Annotated[list[TokenId], Field(min_length=1)]


MAX_PROMPTS = 64  # prompts in one request; with n, bounded further by what the server admits at once


PROMPTS_WITHOUT_STREAM = {  # several prompts (a list of texts or of token lists) are answered whole, not streamed
    "not": {
        "properties": {
            "stream": {"const": True},
            "prompt": {"type": "array", "minItems": 2, "items": {"type": ["string", "array"]}},
        },
        "required": ["stream", "prompt"],
    }
}


COMPLETION_RULES = {
    "allOf": [
        N_WITHOUT_STREAM,
        PROMPTS_WITHOUT_STREAM,
        {
            "if": {"properties": {"max_tokens": {"const": 0}}, "required": ["max_tokens"]},
            "then": {"properties": {"echo": {"const": True}}, "required": ["echo"]},
        },
        {"not": {"properties": {"echo": {"const": True}, "stream": {"const": True}}, "required": ["echo", "stream"]}},
        {
            "not": {
                "properties": {
                    "ignore_eos": {"const": True},
                    "response_format": {"properties": {"type": {"enum": ["json_object", "json_schema"]}}, "required": ["type"]},
                },
                "required": ["ignore_eos", "response_format"],
            }
        },
    ]
}


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra=COMPLETION_RULES)
    prompt: (
        PromptText
        | Annotated[list[PromptText], Field(min_length=1, max_length=MAX_PROMPTS)]
        | PromptIds
        | Annotated[list[PromptIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    ) = Field(
        ...,
        description="Raw text (or token ids) for the base model to continue, no URIAL prompt; or a list of texts (of token "
        "lists), each answered as its own choice(s): choice i*n + j is prompt i's j-th (not streamed).",
    )
    echo: bool = Field(False, description="Return the prompt before the answer (with logprobs: the prompt's too).")
    logprobs: Whole | None = Field(None, ge=0, le=20, description="Log-probabilities of the tokens and the k likeliest.")
    return_tokens_as_token_ids: bool = Field(False, description="Name tokens 'token_id:N' in logprobs (as vLLM does).")
    best_of: Whole | None = Field(None, ge=1, le=1, description="Not supported: only 1.")
    ignore_eos: bool = Field(
        False,
        description="Go on past the end-of-sequence token to max_tokens (vLLM's and "
        "llama.cpp's extension, for benchmarks of equal work).",
    )
    suffix: None = Field(None, description="Not supported.")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, value):
        if value == "" or isinstance(value, list) and (not value or any(item in ("", []) for item in value)):
            raise ValueError("prompt is empty")
        return value

    @model_validator(mode="after")
    def _checked(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens may be 0 only with echo (to score the prompt)")
        if self.echo and self.stream:
            raise ValueError("echo with stream is not supported; ask without stream")
        if self.stream and len(self.prompts) > 1:
            raise ValueError(f"a list of {len(self.prompts)} prompts is answered whole: ask without stream (or one prompt)")
        if self.ignore_eos and self.response_format is not None and self.response_format.type != "text":
            raise ValueError("ignore_eos cannot go with a JSON response_format: the grammar ends the answer where the JSON ends")
        return self

    @property
    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a text, or a list of token ids (``"a"``, ``["a", "b"]``, ``[1, 2]``, ``[[1, 2], [3]]``)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if isinstance(self.prompt[0], (str, list)):
            return list(self.prompt)  # type: ignore[arg-type]
        return [list(self.prompt)]  # type: ignore[arg-type]


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: with echo, the prompt's tokens first (the very first has no log-probability)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class TextChoice(Choice):
    text: str
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(ResponseBase):
    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]


def text_chunk(ident: str, created: int, model: str, text: str, finish: str | None) -> dict:
    return chunk("text_completion", ident, created, model, {"text": text, "finish_reason": finish})
