"""Records of the chat page's endpoints, untuned's own: the prompt sets, the rendered prompt, the shift
of an answer's tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.server.wire import NOT_BOTH_PROMPTS, InlinePromptSet, Message


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


ONE_QUESTION = {"oneOf": [{"required": ["query"]}, {"required": ["messages"]}]}  # the question alone, or its conversation
Side = Literal["urial", "none", "aligned"]


class ShiftRequest(BaseModel):
    """An answer (to ``query``, or after ``messages``) whose tokens to rank under the base model without the
    URIAL prefix, by the model's distributions, with the sampler's effect beside."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"allOf": [NOT_BOTH_PROMPTS, ONE_QUESTION]})
    query: str | None = Field(None, min_length=1, max_length=100_000, description="The question, alone (or messages).")
    messages: list[Message] | None = Field(
        None, min_length=1, max_length=512, description="The conversation the answer follows, its last message the user's."
    )
    answer: str = Field(..., min_length=1, max_length=100_000)
    top_k: int = Field(5, ge=1, le=20)
    mode: Literal["context", "pair"] = Field(
        "context",
        description="context: the base model's distributions without the URIAL prefix against its own with it, along the "
        "answer (`untuned shift context`); pair: the base without the prefix against the --aligned model in its own chat "
        "template, with KL (`untuned shift pair`; the two must share a tokenizer). Either way the aligned side's first "
        "choice is ranked at each position: the models are compared, not the sampler.",
    )
    prompt: str | None = Field(None, max_length=256, description="context mode: the URIAL side's prompt set by name.")
    prompt_set: InlinePromptSet | None = Field(None, description="context mode: the URIAL side's prompt set, given here.")
    sampled_from: Side | None = Field(
        None,
        description="The side that wrote the answer (urial: the base with the prompt set; none: the base alone; aligned: "
        "the --aligned model), whose ranks of the answer's own tokens are the sampler view. Default: urial in context "
        "mode, aligned in pair mode.",
    )


class SamplerView(BaseModel):
    """The sampler's effect: at each position the rank of the answer's own token under the distribution it was
    drawn from (1: the model's first choice; more: temperature, top-p or a repetition penalty chose otherwise)."""

    sampled_from: Side
    ranks: list[int | None] = Field(description="Per position (None at the end position).")
    categories: list[str | None]
    ratios: dict[str, float]
    off_first_choice: int = Field(description="Positions where the answer did not take the model's first choice.")
