"""Wire records of the OpenAI-compatible API that ``untuned serve`` speaks.

A request field the server does not support is refused (400, naming it), never ignored; fields
that change nothing (``user``, ``metadata``, ``store``) and unsupported ones given their neutral
value (``frequency_penalty: 0``, ``logit_bias: {}``, ``n: 1``...), as many clients send them, pass.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from untuned.server.tool_schema import TOOL_CHOICE_HELP, TOOLS_HELP, NamedToolChoice, ToolCallIn

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


class _SamplingFields(BaseModel):
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
N_WITHOUT_STREAM = {
    "if": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
    "then": {"properties": {"n": {"const": 1}}},
}


class ChatRequest(_SamplingFields):
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


class CompletionRequest(_SamplingFields):
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


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "untuned"
    prompt: str | None = Field(
        description="Name of the URIAL prompt set the server aligns with (None: an aligned "
        "model answering in its own chat template)."
    )
    context_length: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_json(message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorBody(message=message, type=kind, param=param, code=code)).model_dump()
