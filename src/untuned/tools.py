"""Tool calls on a base model, in the URIAL manner: the tools are described after the system text, two
example conversations of our own show a call, its result and the answer that uses it, and the answer is
either text or one call written as a JSON object ``{"name": ..., "arguments": {...}}``.

A grammar (llguidance's Lark, the call's JSON schema inside it) enforces the choice: with ``tool_choice``
"auto" the answer is text (not starting with ``{``) or exactly one call whose arguments match that tool's
JSON schema; "required" and a named function allow the call alone. A chat template that knows tools is what instruct models need;
a base model needs only the examples and the grammar.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from untuned.errors import UntunedError

RESULT_HEADING = "# Result of {name}:"
# The layout of every JSON answer held to a schema (llguidance's compile options): as json.dumps writes it and as
# the examples show it, one space after ',' and ':' and no other white space (a model free to add white space
# can fill its whole answer with newlines).
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def closed_objects(schema: object) -> object:
    """``schema`` with every object that lists its ``properties`` and says nothing of others closed to them
    (``additionalProperties: false``), as llama.cpp's grammars and OpenAI's strict mode generate: any answer
    still matches the schema as written, and a model cannot go on adding keys of its own until max_tokens.
    An object with no ``properties`` (``{"type": "object"}``: any JSON object) stays open."""
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    found = {
        key: value if key in ("enum", "const", "default", "examples") else closed_objects(value) for key, value in schema.items()
    }
    if isinstance(found.get("properties"), dict):
        found["properties"] = {name: closed_objects(value) for name, value in schema["properties"].items()}
        if "additionalProperties" not in found and "patternProperties" not in found:
            found["additionalProperties"] = False
    return found


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def signature(self) -> str:
        return json.dumps({"name": self.name, "description": self.description, "parameters": self.parameters}, sort_keys=True)


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: the tool's name and its arguments (a JSON object, as text)."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ToolExample:
    """One example conversation of the tool-use format: a question, the call, its result, the answer."""

    tool: Tool
    query: str
    call: dict[str, Any]
    result: str
    answer: str


EXAMPLE_TOOLS = (
    Tool(
        "convert_units",
        "Convert a quantity from one unit to another.",
        {
            "type": "object",
            "properties": {"value": {"type": "number"}, "from_unit": {"type": "string"}, "to_unit": {"type": "string"}},
            "required": ["value", "from_unit", "to_unit"],
        },
    ),
    Tool(
        "search_library",
        "Find books in the city library's catalogue.",
        {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    ),
)
EXAMPLES = (
    ToolExample(
        EXAMPLE_TOOLS[0],
        "How many kilometres is a half marathon of 13.1 miles?",
        {"name": "convert_units", "arguments": {"value": 13.1, "from_unit": "mile", "to_unit": "kilometre"}},
        '{"value": 21.08, "unit": "kilometre"}',
        "A half marathon of 13.1 miles is about **21.1 kilometres** (21.08 km, to be exact).",
    ),
    ToolExample(
        EXAMPLE_TOOLS[1],
        "Does the library have anything on beekeeping for beginners?",
        {"name": "search_library", "arguments": {"query": "beekeeping for beginners"}},
        '[{"title": "The Backyard Beekeeper", "available": true}, {"title": "Bees in a Year", "available": false}]',
        'Yes: "The Backyard Beekeeper" is on the shelf now; "Bees in a Year" is out on loan, so you could reserve it.',
    ),
)


def tools_from_openai(tools: list[dict[str, Any]]) -> list[Tool]:
    """OpenAI's ``tools`` (``{"type": "function", "function": {...}}``) as :class:`Tool` records; anything
    else is an error naming the entry."""
    found = []
    for index, entry in enumerate(tools):
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("type") != "function" or not isinstance(function, dict):
            raise UntunedError(f"tools[{index}]: only function tools are supported ({{'type': 'function', 'function': {{...}}}})")
        name = function.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise UntunedError(f"tools[{index}].function.name must be 1-64 letters, digits, _ or -")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise UntunedError(f"tools[{index}].function.parameters must be a JSON schema object")
        found.append(Tool(name, str(function.get("description") or ""), parameters))
    names = [tool.name for tool in found]
    if len(set(names)) != len(names):
        raise UntunedError("tools: two tools share a name")
    return found


def tools_text(tools: list[Tool]) -> str:
    """What follows the system text when tools are offered: the format, then each tool."""
    lines = [
        "The assistant can use tools. To use one, its whole answer is one JSON object naming the tool and its "
        'arguments, {"name": ..., "arguments": {...}}, and nothing else; the result comes back in a "Result of" '
        "block, and the assistant then answers the person using it. When no tool is needed, it answers in "
        "words. The examples use example tools; in the conversation the assistant uses only these:",
    ]
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description or '(no description)'} Arguments: {json.dumps(tool.parameters)}")
    return "\n".join(lines)


def call_text(name: str, arguments: dict[str, Any] | str) -> str:
    """A call as the model writes it (and as the transcript shows an earlier call)."""
    parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    return json.dumps({"name": name, "arguments": parsed}, ensure_ascii=False)


def call_schema(tools: list[Tool]) -> dict[str, Any]:
    """The JSON schema of one call to any of ``tools``."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def call_grammar(tools: list[Tool], *, text_allowed: bool) -> str:
    """The Lark grammar (llguidance's) of an answer that is one call to one of ``tools`` (its arguments
    held to that tool's schema), or (``auto``) that call or text not beginning with ``{`` or white space."""
    call = f"%json {json.dumps({**closed_objects(call_schema(tools)), 'x-guidance': JSON_STYLE})}"
    if not text_allowed:
        return f"start: {call}\n"
    return f"start: call | TEXT\ncall: {call}\nTEXT: /[^{{ \\t\\n\\r][\\s\\S]*/\n"


def parse_call(text: str, tools: list[Tool]) -> ToolCall | None:
    """The call in an answer (one JSON object naming an offered tool, with object arguments), else None."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        found = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    names = {tool.name for tool in tools}
    if not isinstance(found, dict) or found.get("name") not in names or not isinstance(found.get("arguments"), dict):
        return None
    return ToolCall(found["name"], json.dumps(found["arguments"], ensure_ascii=False))


def chosen_tools(tools: list[Tool], choice: Any) -> tuple[list[Tool], bool]:
    """(the tools the answer may call, whether text is allowed) for OpenAI's ``tool_choice``."""
    if choice in (None, "auto"):
        return tools, True
    if choice == "required":
        return tools, False
    if choice == "none":
        return [], True
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    named = [tool for tool in tools if tool.name == name]
    if not named:
        raise UntunedError(f"tool_choice names {name!r}, which is not among the tools ({', '.join(t.name for t in tools)})")
    return named, False
