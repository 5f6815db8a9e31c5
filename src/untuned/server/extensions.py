"""Records of the chat page's endpoints, untuned's own: the prompt sets, the rendered prompt, the shift
of an answer's tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.server.schema import NOT_BOTH_PROMPTS, InlinePromptSet, Message


class PromptRequest(BaseModel):
    """The conversation (and prompt set) whose rendered prompt to show."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=NOT_BOTH_PROMPTS)
    messages: list[Message] = Field(..., min_length=1, max_length=512)
    prompt: str | None = Field(None, max_length=256, description="A prompt set by name, or 'none'.")
    prompt_set: InlinePromptSet | None = Field(None, description="A prompt set given here, in place of one by name.")


class PromptView(BaseModel):
    """The exact prompt the model sees for a conversation."""

    prompt: str = Field(description="The prompt set's name ('none': no URIAL prefix).")
    text: str
    prompt_tokens: int
    prefix_tokens: int = Field(description="Tokens of the constant URIAL prefix, evaluated once.")
    context_length: int | None


class ExampleOut(BaseModel):
    query: str
    answer: str


class PromptSetOut(BaseModel):
    name: str
    description: str
    system: str
    examples: list[ExampleOut]
    active: bool = Field(description="The server's default prompt set.")


class ShiftRequest(BaseModel):
    """An answer to a query, whose tokens to rank under the base model without the URIAL prefix."""

    model_config = ConfigDict(extra="forbid", strict=True)
    query: str = Field(..., min_length=1, max_length=100_000)
    answer: str = Field(..., min_length=1, max_length=100_000)
    top_k: int = Field(5, ge=1, le=20)
    mode: Literal["context", "pair"] = Field(
        "context",
        description="context: an answer of the base + URIAL, ranked under the base with no prefix (the base side of "
        "`untuned shift context`); pair: an answer of the --aligned model, ranked under the base and under the aligned "
        "model in its own chat template, with KL (`untuned shift pair`; the two must share a tokenizer).",
    )
