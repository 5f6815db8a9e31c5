"""Wire records every endpoint of ``untuned serve`` shares: messages, the sampling fields, usage, errors, the
tool-call records and the parts of a response or a stream chunk.

A request field the server does not support is refused (400, naming it), never ignored; fields
that change nothing (``user``, ``metadata``, ``store``) and unsupported ones given their neutral
value (``frequency_penalty: 0``, ``logit_bias: {}``, ``n: 1``...), as many clients send them, pass."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]


def _whole_number(value: Any) -> Any:
    """JSON Schema's integers include 4.0: a float with no fraction is taken as the integer it is."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**63 else value


Whole = Annotated[int, BeforeValidator(_whole_number)]  # an integer field (types are strict: "4" is not one)


TOKEN_ID_MARK = "x-untuned-token-id"  # replaced in the served OpenAPI schema by the model's vocabulary bound


TokenId = Annotated[Whole, Field(ge=0, json_schema_extra={TOKEN_ID_MARK: True})]


NOT_BLANK = r"\S"  # at least one character that is not white space


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str


TEXT_PART = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
}


USER_TEXT = {"anyOf": [{"type": "string", "pattern": NOT_BLANK}, {"type": "array", "minItems": 1, "items": TEXT_PART}]}


def _message_schema(schema: dict) -> None:
    """A message's JSON schema by role: a user's content holds some text; the others' may be empty."""
    content = {"anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}, {"type": "null"}]}
    user = {"type": "object", "properties": {"role": {"const": "user"}, "content": USER_TEXT}, "required": ["role", "content"]}
    other = {"type": "object", "properties": {"role": {"enum": ["system", "developer", "assistant"]}, "content": content}}
    tool = {
        "type": "object",
        "properties": {"role": {"const": "tool"}, "content": content, "tool_call_id": {"type": "string"}},
        "required": ["role", "tool_call_id"],
    }
    schema.clear()
    schema.update({"title": "Message", "oneOf": [user, {**other, "required": ["role"]}, tool]})


class Message(BaseModel):
    """A chat message; a user's holds some text (the schema says so, the conversation checks it)."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_message_schema)
    role: Role
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCallIn] | None = Field(None, description="An assistant message's calls (at most one).")
    tool_call_id: str | None = Field(None, max_length=256, description="A tool message's call.")
    name: str | None = Field(None, max_length=64)

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value):
        if isinstance(value, list):
            for index, part in enumerate(value):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text":
                    raise ValueError(
                        f"content part {index} is of type {kind!r}: this server reads text parts only "
                        "(a base model reads text; send images elsewhere)"
                    )
        return value

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


# Schemas that once reached native code badly, given as examples: an API fuzzer's example and coverage phases send
# them (a NUL only an escape spells, counts to expand, a huge enum, a reference, numeric bounds, nesting).
HOSTILE_SCHEMAS = [
    {"type": "string", "pattern": "^[\\x00]$"},
    {"type": "string", "pattern": "^a{1000000000000}$"},
    {"type": "object", "properties": {"s": {"type": "string", "maxLength": 5000}}, "required": ["s"]},
    {"enum": [f"v{i}" for i in range(2000)]},
    {"type": "array", "items": {"type": "integer", "minimum": 3, "maximum": 5}, "minItems": 2},
    {"type": "array", "maxItems": 10**9, "items": {"type": "array", "items": {"type": "string", "minLength": 100000}}},
]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: str = Field("response", max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] = Field(
        alias="schema", description="The JSON schema the answer must follow.", examples=HOSTILE_SCHEMAS
    )
    strict: bool | None = Field(None, description="Accepted: the schema is always enforced (llguidance).")


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: plain text, any JSON object, or JSON following a schema; the JSON
    forms are enforced token by token with a grammar (backends that can: llama.cpp)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema (with its schema) goes with type 'json_schema', and only with it")
        return self

    @property
    def schema_text(self) -> str | None:
        """The schema to enforce as JSON text, None for plain text."""
        if self.type == "json_object":
            return json.dumps({"type": "object"})
        return json.dumps(self.json_schema.json_schema) if self.json_schema is not None else None


StopText = Annotated[str, Field(min_length=1, max_length=256)]


BiasKey = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]


Bias = Annotated[float, Field(ge=-100, le=100)]


class SamplingFields(BaseModel):
    """Fields both endpoints share; ``None`` means the server's default. Types are strict: ``"4"`` is
    not a number here (JSON integers still pass where a number is wanted)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, max_length=256, description="Ignored beyond logging: the server has one model.")
    max_tokens: Whole | None = Field(
        None, ge=0, description="Most new tokens; with the prompt it must fit the context window; 0 only with echo."
    )
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: Whole | None = Field(None, ge=0, lt=2**31)
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = Field(None, description="A stop string or up to 4.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Whole = Field(
        1,
        ge=1,
        le=16,
        description="Choices made from the one prompt, each with its own seed (seed + i when a seed is given); not with stream.",
    )
    user: str | None = Field(None, max_length=256, description="Accepted, changes nothing.")
    metadata: dict[str, str] | None = Field(None, description="Accepted, changes nothing.")
    store: bool | None = Field(None, description="Accepted, changes nothing (nothing is stored).")
    frequency_penalty: float | None = Field(None, ge=0, le=0, description="Not supported: only 0.")
    presence_penalty: float | None = Field(None, ge=0, le=0, description="Not supported: only 0.")
    logit_bias: dict[BiasKey, Bias] | None = Field(
        None,
        max_length=300,
        description="Token id (as text) to a bias from -100 to 100 added to its logit before choosing "
        "(ids within the vocabulary); log-probabilities stay the model's own.",
    )
    response_format: ResponseFormat | None = Field(None, description="text, json_object or json_schema (enforced).")

    @model_validator(mode="after")
    def _n_without_stream(self):
        if self.n > 1 and self.stream:
            raise ValueError("n > 1 with stream is not supported; ask without stream (the choices come together)")
        return self

    @property
    def bias(self) -> tuple[tuple[int, float], ...]:
        """``logit_bias`` as (token id, bias) pairs."""
        return tuple((int(token), float(value)) for token, value in (self.logit_bias or {}).items())

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ExampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    query: str = Field(..., min_length=1, max_length=20_000)
    answer: str = Field(..., min_length=1, max_length=20_000)


class InlinePromptSet(BaseModel):
    """untuned's extension: a prompt set given in the request (the page's editor tries one out)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field("custom", min_length=1, max_length=64)
    system: str = Field("", max_length=20_000)
    examples: list[ExampleIn] = Field(default_factory=list, max_length=64)


NOT_BOTH_PROMPTS = {"not": {"required": ["prompt", "prompt_set"]}}  # a prompt set by name or inline, not both


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


ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 413, 500, 503, 504)}  # the error statuses documented


# with stream: true, the answer comes as server-sent events (OpenAI's chunks, then "data: [DONE]")
SSE_EVENT = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}


STREAMED = {200: {"content": {"text/event-stream": {"itemSchema": SSE_EVENT}}, "description": "The answer"}}


def error_json(message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorBody(message=message, type=kind, param=param, code=code)).model_dump()


TOOLS_HELP = (
    "Function tools: described in the URIAL prompt beside tool-use examples; the answer is text or one call whose "
    "arguments match the tool's schema, held to that by a grammar (llama.cpp)."
)


TOOL_CHOICE_HELP = "none, auto (text or one call), required (one call), or one named function."


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    arguments: str = "{}"


class ToolCallIn(BaseModel):
    """A call an earlier assistant message made (OpenAI's ``tool_calls`` entry)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: NamedFunction


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class Choice(BaseModel):
    index: int = 0
    finish_reason: str | None


class ResponseBase(BaseModel):
    """What a chat and a text completion response share; ``object`` and ``choices`` differ."""

    id: str
    created: int
    model: str
    usage: Usage


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def chunk(kind: str, ident: str, created: int, model: str, choice: dict[str, Any]) -> dict:
    return {
        "id": ident,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [{"index": 0, **choice, "logprobs": None}],
    }
