"""Wire records of tool calls: the calls an earlier assistant message made, and a named ``tool_choice``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

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
