"""Wire records of ``POST /v1/chat/completions``: the request, the response, its log-probabilities and stream chunks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from untuned.server.wire import (
    HOSTILE_SCHEMAS,
    NOT_BOTH_PROMPTS,
    TOOL_CHOICE_HELP,
    TOOLS_HELP,
    Choice,
    InlinePromptSet,
    Message,
    NamedToolChoice,
    ResponseBase,
    SamplingFields,
    TopLogprob,
    Whole,
    chunk,
)

N_WITHOUT_STREAM = {
    "if": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
    "then": {"properties": {"n": {"const": 1}}},
}


class ChatRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra={"allOf": [NOT_BOTH_PROMPTS, N_WITHOUT_STREAM]})
    messages: list[Message] = Field(..., min_length=1, max_length=512)
    max_tokens: Whole | None = Field(None, ge=1, description="Most new tokens; with the prompt it must fit the context window.")
    max_completion_tokens: Whole | None = Field(None, ge=1, description="Newer name of max_tokens; wins if both are set.")
    logprobs: bool = Field(False, description="Return each answer token's log-probability.")
    top_logprobs: Whole | None = Field(None, ge=0, le=20, description="And its k likeliest alternatives (needs logprobs).")
    prompt: str | None = Field(
        None,
        max_length=256,
        description="untuned's extension: the prompt set to align with, "
        "by name (GET /v1/untuned/prompts lists them); 'none': the base model with no URIAL "
        "prefix, the query as plain text.",
    )
    prompt_set: InlinePromptSet | None = Field(
        None,
        description="untuned's extension: a prompt set given in the request (system text and examples), in place of one by name.",
    )
    repetition_penalty: float | None = Field(None, gt=0.0, le=3.0, description="1 turns it off (default: the server's).")
    tools: list[dict[str, Any]] | None = Field(
        None,
        max_length=64,
        description=TOOLS_HELP,
        examples=[
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": s}}}}]
            for s in HOSTILE_SCHEMAS[:3]
        ],
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(None, description=TOOL_CHOICE_HELP)
    parallel_tool_calls: bool | None = Field(None, description="Accepted: an answer makes at most one call.")

    @model_validator(mode="after")
    def _checked(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.max_tokens == 0:
            raise ValueError("max_tokens must be at least 1")
        return self


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class ChatChoice(Choice):
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None


class ChatResponse(ResponseBase):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


def chat_chunk(ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> dict:
    return chunk("chat.completion.chunk", ident, created, model, {"delta": delta, "finish_reason": finish})
