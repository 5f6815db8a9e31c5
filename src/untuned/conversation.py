"""Rendering a URIAL prompt set and a conversation into the text a base model continues.

Layout (our own, in the manner of the URIAL paper: headings plus fenced blocks)::

    # Instruction

    <system text>

    # Query:
    ````
    <example query>
    ````

    # Answer:
    ````
    <example answer>
    ````

    ... more examples, then the conversation's turns, ending with an open answer block.

Blocks are fenced with four backticks so that answers can hold ordinary three-backtick code
fences. The constant part (instruction + examples) is the *prefix*, which backends cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from untuned.errors import InvalidInput
from untuned.prompt import PromptSet
from untuned.tools import EXAMPLES, RESULT_HEADING, Tool, call_text, tools_text

Role = Literal["user", "assistant", "tool"]
SystemMode = Literal["append", "replace"]  # a client's system message: after the URIAL system text, or instead


@dataclass(frozen=True)
class UrialFormat:
    """The headings and fence of the rendered prompt, and the stop strings they imply."""

    instruction_heading: str = "# Instruction"
    query_heading: str = "# Query:"
    answer_heading: str = "# Answer:"
    fence: str = "````"

    @property
    def stop(self) -> tuple[str, ...]:
        """Text that means the answer is over: the closing fence, or a new query heading."""
        return (self.fence, "\n" + self.query_heading, "\n" + self.answer_heading)

    def block(self, heading: str, body: str) -> str:
        return f"{heading}\n{self.fence}\n{body}\n{self.fence}\n\n"


DEFAULT_FORMAT = UrialFormat()

_LONG_FENCE = re.compile(r"`{4,}")
_HEADING_LINE = re.compile(r"^([ \t]*)(#+[ \t]*(?:instruction|query|answer|result of)\b)", re.IGNORECASE | re.MULTILINE)


def neutralise(text: str) -> str:
    """Make user (or model) text safe to place inside a fenced block.

    Runs of four or more backticks become three, so the text cannot close the block; lines that
    look like our headings are escaped with a backslash, so the text cannot forge a turn.
    Ordinary code fences and Markdown headings are left alone.
    """
    text = _LONG_FENCE.sub("```", text)
    return _HEADING_LINE.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", text)


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str
    name: str = ""  # a tool result's tool


@dataclass(frozen=True)
class RenderedPrompt:
    """Prompt text split where caching pays off: ``prefix`` is constant for a prompt set.

    ``special_tokens``: the text spells out the model's special tokens (a chat template's
    ``<|im_start|>``, its BOS), which are to be tokenized as such and not added again.
    ``ids``: the prompt given as token ids, used as they are (the text fields are then empty).
    """

    prefix: str
    body: str
    special_tokens: bool = False
    ids: tuple[int, ...] | None = None

    @property
    def text(self) -> str:
        return self.prefix + self.body


def render_prefix(
    prompt: PromptSet, fmt: UrialFormat = DEFAULT_FORMAT, *, system: str | None = None, tools: tuple[Tool, ...] = ()
) -> str:
    """The constant part: instruction heading, system text, and every example conversation; with ``tools``,
    the tools after the system text and the tool-use examples after the prompt set's (:mod:`untuned.tools`)."""
    system_text = prompt.system if system is None else system
    if tools:
        system_text = f"{system_text.strip()}\n\n{tools_text(list(tools))}".strip()
    parts = []
    if system_text:
        parts.append(f"{fmt.instruction_heading}\n\n{system_text.strip()}\n\n\n")
    for example in prompt.examples:
        parts.append(fmt.block(fmt.query_heading, example.query))
        parts.append(fmt.block(fmt.answer_heading, example.answer))
    for shown in EXAMPLES if tools else ():
        parts.append(fmt.block(fmt.query_heading, shown.query))
        parts.append(fmt.block(fmt.answer_heading, call_text(shown.call["name"], shown.call["arguments"])))
        parts.append(fmt.block(RESULT_HEADING.format(name=shown.tool.name), shown.result))
        parts.append(fmt.block(fmt.answer_heading, shown.answer))
    return "".join(parts)


@dataclass
class Conversation:
    """A URIAL prompt set plus the turns of one conversation; renders to model input.

    ``system`` replaces the prompt set's system text when given (see ``untuned serve``).
    """

    prompt: PromptSet
    turns: list[Turn] = field(default_factory=list)
    fmt: UrialFormat = DEFAULT_FORMAT
    system: str | None = None
    tools: tuple[Tool, ...] = ()  # offered to the model: described in the prefix, with the tool-use examples

    def add_user(self, content: str) -> None:
        if self.turns and self.turns[-1].role == "user":
            raise InvalidInput("two user turns in a row: add the assistant's answer first")
        self.turns.append(Turn("user", content))

    def add_assistant(self, content: str) -> None:
        if not self.turns or self.turns[-1].role == "assistant":
            raise InvalidInput("an assistant turn must follow a user turn or a tool's result")
        self.turns.append(Turn("assistant", content))

    def add_tool_result(self, name: str, content: str) -> None:
        """The result of the call the assistant's last answer made."""
        if not self.turns or self.turns[-1].role != "assistant":
            raise InvalidInput("a tool's result must follow the assistant's call")
        self.turns.append(Turn("tool", content, name))

    def reset(self) -> None:
        self.turns.clear()

    def render(self) -> RenderedPrompt:
        """Render for the model's next answer; the last turn must be the user's."""
        if not self.turns or self.turns[-1].role == "assistant":
            raise InvalidInput("the conversation must end with a user turn (or a tool's result) to be answered")
        fmt = self.fmt
        body = []
        for turn in self.turns:
            text = neutralise(turn.content.strip())
            if turn.role == "user":
                body.append(fmt.block(fmt.query_heading, text))
            elif turn.role == "tool":
                body.append(fmt.block(RESULT_HEADING.format(name=turn.name), text))
            else:
                body.append(fmt.block(fmt.answer_heading, text))
        body.append(f"{fmt.answer_heading}\n{fmt.fence}\n")
        return RenderedPrompt(prefix=self.render_prefix(), body="".join(body))

    def render_prefix(self) -> str:
        """The constant part this conversation's prompts begin with (see :func:`render_prefix`)."""
        system = None if self.system is None else neutralise(self.system)
        return render_prefix(self.prompt, self.fmt, system=system, tools=self.tools)
