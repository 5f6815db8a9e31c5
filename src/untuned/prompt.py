"""URIAL prompt sets: a system text plus K example conversations, stored as ``.urial`` files.

File format (UTF-8 text)::

    # comment lines and blank lines are allowed before the first section
    name: helpful
    description: one line shown by `untuned prompts list`

    === system ===
    The preamble that describes the assistant.

    === query ===
    The first example question.

    === answer ===
    Its answer. Any text, Markdown and code fences included.

``=== query ===`` / ``=== answer ===`` pairs repeat K times (K may be 0). The system section is
optional but must come first when present. Section bodies keep their inner formatting; blank
lines around them are dropped. Header keys other than ``name`` and ``description`` are errors,
and every error names the file and line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from untuned.errors import PromptFileError, UnknownPromptError, UntunedError

SUFFIX = ".urial"
_SECTION = re.compile(r"^===\s*([A-Za-z][\w-]*)\s*===\s*$")
_ALMOST_SECTION = re.compile(r"^===\s*(system|query|answer)\b", re.IGNORECASE)
_HEADER = re.compile(r"^([A-Za-z][\w-]*)\s*:\s*(.*)$")
_HEADER_KEYS = ("name", "description")


@dataclass(frozen=True)
class Example:
    """One example conversation: a query and the answer the assistant should model."""

    query: str
    answer: str


@dataclass(frozen=True)
class PromptSet:
    """A URIAL prompt set. ``examples`` may be empty (zero-shot)."""

    name: str
    system: str
    examples: tuple[Example, ...] = ()
    description: str = ""
    source: str | None = field(default=None, compare=False)

    @property
    def k(self) -> int:
        """Number of example conversations."""
        return len(self.examples)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the system text and examples: two sets with the same hash prompt identically."""
        payload = {"system": self.system, "examples": [[e.query, e.answer] for e in self.examples]}
        blob = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_text(self) -> str:
        """Serialise in the ``.urial`` file format (``parse_prompt`` reads it back unchanged)."""
        lines = [f"name: {self.name}"]
        if self.description:
            lines.append(f"description: {self.description}")
        lines += ["", "=== system ===", self.system, ""]
        for ex in self.examples:
            lines += ["=== query ===", ex.query, "", "=== answer ===", ex.answer, ""]
        return "\n".join(lines)


def _body(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n").rstrip()


def parse_prompt(text: str, *, source: str = "<string>", default_name: str = "custom") -> PromptSet:
    """Parse a ``.urial`` document; raise :class:`PromptFileError` naming the line on any problem."""
    header, sections = _split_document(text, source)
    if not sections:
        raise PromptFileError(source, max(1, len(text.splitlines())), "no sections found; add at least '=== system ==='")
    system, examples = _pair_sections(sections, source)
    return PromptSet(
        name=header.get("name") or default_name,
        system=system,
        examples=tuple(examples),
        description=header.get("description", ""),
        source=source,
    )


_Section = tuple[str, int, list[str]]  # (kind, line number of its marker, body lines)


def _split_document(text: str, source: str) -> tuple[dict[str, str], list[_Section]]:
    """The header's keys and the sections, each line checked."""
    header: dict[str, str] = {}
    sections: list[_Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        marker = _SECTION.match(line)
        if marker:
            kind = marker.group(1).lower()
            if kind not in ("system", "query", "answer"):
                raise PromptFileError(source, number, f"unknown section '{marker.group(1)}' (expected system, query or answer)")
            sections.append((kind, number, []))
            continue
        if _ALMOST_SECTION.match(line):
            raise PromptFileError(source, number, f"malformed section marker {line!r}; write it as '=== name ==='")
        if sections:
            sections[-1][2].append(line)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pair = _HEADER.match(stripped)
        if not pair:
            raise PromptFileError(
                source, number, f"expected 'key: value' or a section marker such as '=== system ===', got {stripped!r}"
            )
        key = pair.group(1).lower()
        if key not in _HEADER_KEYS:
            raise PromptFileError(source, number, f"unknown header key '{pair.group(1)}' (known: {', '.join(_HEADER_KEYS)})")
        header[key] = pair.group(2).strip()
    return header, sections


def _pair_sections(sections: list[_Section], source: str) -> tuple[str, list[Example]]:
    """The system text and the query/answer examples, in order."""
    system = ""
    examples: list[Example] = []
    pending: tuple[int, str] | None = None  # (line, query) awaiting its answer
    for index, (kind, number, body_lines) in enumerate(sections):
        body = _body(body_lines)
        if not body:
            raise PromptFileError(source, number, f"the {kind} section is empty")
        if kind == "system":
            if index != 0:
                raise PromptFileError(source, number, "the system section must come first and only once")
            system = body
        elif kind == "query":
            if pending is not None:
                raise PromptFileError(source, number, f"a query follows the query of line {pending[0]} with no answer between")
            pending = (number, body)
        else:
            if pending is None:
                raise PromptFileError(source, number, "an answer section with no query before it")
            examples.append(Example(query=pending[1], answer=body))
            pending = None
    if pending is not None:
        raise PromptFileError(source, pending[0], "this query has no answer section after it")
    return system, examples


def builtin_prompt_names() -> list[str]:
    """Names of the prompt sets shipped with untuned, sorted."""
    folder = resources.files("untuned") / "prompts"
    return sorted(p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX))


# Prompt sets named ``PREFIX:NAME`` and where they come from (``pool``: kept examples, registered by untuned.pool)
PROMPT_SOURCES: dict[str, Callable[[str], PromptSet]] = {}


def load_prompt(name_or_path: str | Path) -> PromptSet:
    """Load a bundled prompt set by name, a ``.urial`` file by path, or a pool of kept examples (``pool:NAME``)."""
    text = str(name_or_path)
    prefix, _, rest = text.partition(":")
    if rest and prefix in PROMPT_SOURCES:
        return PROMPT_SOURCES[prefix](rest)
    if text in builtin_prompt_names():
        resource = resources.files("untuned") / "prompts" / f"{text}{SUFFIX}"
        return parse_prompt(resource.read_text(encoding="utf-8"), source=f"builtin:{text}", default_name=text)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise PromptFileError(str(path), _line_of(path, exc.start), "not valid UTF-8 text") from exc
        stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem
        return parse_prompt(content, source=str(path), default_name=stem)
    known = ", ".join(builtin_prompt_names())
    if path.suffix or "/" in text or "\\" in text:
        raise UnknownPromptError(f"prompt file {text!r} does not exist. Bundled prompt sets: {known}.")
    raise UnknownPromptError(f"unknown prompt {text!r}. Bundled prompt sets: {known}; or pass the path of a {SUFFIX} file.")


def _line_of(path: Path, byte_offset: int) -> int:
    """1-based line number of a byte offset in a file."""
    return path.read_bytes()[:byte_offset].count(b"\n") + 1


def read_examples(path: str | Path) -> list[Example]:
    """Example conversations from a JSON / JSONL file: rows of ``query`` and ``answer`` (or
    ``instruction`` and ``output``), or rows of chat ``messages`` (each user message and the
    assistant message after it make one example). A row that is neither is named by file and line."""
    from untuned.errors import DataFileError
    from untuned.rows import read_rows

    examples = []
    for number, row in read_rows(path):
        if isinstance(row.get("messages"), list):
            pending = None
            for message in row["messages"]:
                role, content = (message.get("role"), message.get("content")) if isinstance(message, dict) else (None, None)
                if not isinstance(content, str):
                    raise DataFileError(path, number, "every message needs a role and a text content")
                if role == "user":
                    pending = content.strip()
                elif role == "assistant" and pending:
                    examples.append(Example(query=pending, answer=content.strip()))
                    pending = None
            continue
        query, answer = row.get("query", row.get("instruction")), row.get("answer", row.get("output"))
        if not isinstance(query, str) or not isinstance(answer, str) or not query.strip() or not answer.strip():
            raise DataFileError(path, number, "needs query and answer (or instruction and output) texts, or chat messages")
        examples.append(Example(query=query.strip(), answer=answer.strip()))
    return examples


def build_prompt_set(
    examples: list[Example], *, name: str, system: str, k: int | None = None, seed: int | None = None, description: str = ""
) -> PromptSet:
    """A prompt set of ``k`` of ``examples`` (all when None): drawn with ``seed``, or the first k in order.

    It holds only what :func:`load_prompt` reads back: texts as the ``.urial`` reader sees them (line ends,
    surrounding blank lines), the bundled ``helpful`` set's system text when none is given, and a clear
    error, before anything is written, for an example the file cannot hold (an empty text, a line that
    reads as a section marker)."""
    import random

    if k is not None and k > len(examples):
        raise UntunedError(f"-k {k} asks for more examples than the {len(examples)} given")
    chosen = list(examples) if k is None else (random.Random(seed).sample(examples, k) if seed is not None else examples[:k])
    if not re.fullmatch(r"[\w.@+-]{1,128}", name):
        raise UntunedError(f"the name {name!r} must be 1-128 letters, digits, '.', '@', '+', '_' or '-'")
    system_text = _as_read(system) or load_prompt("helpful").system
    cleaned = []
    for index, example in enumerate(chosen, 1):
        query, answer = _as_read(example.query), _as_read(example.answer)
        if not query or not answer:
            raise UntunedError(f"example {index} has an empty {'query' if not query else 'answer'}")
        cleaned.append(Example(query=query, answer=answer))
    built = PromptSet(name=name, system=system_text, examples=tuple(cleaned), description=" ".join(description.split()))
    try:
        again = parse_prompt(built.to_text(), source=name)
    except PromptFileError as exc:
        raise UntunedError(f"the prompt set cannot be written as a .urial file: {exc}") from None
    if (again.system, again.examples) != (built.system, built.examples):
        raise UntunedError("the prompt set would not read back as built (a line of an example reads as a section marker)")
    return built


def _as_read(text: str) -> str:
    """``text`` as the .urial reader gives a section back: its lines, each without a trailing CR, leading and
    trailing blank lines and trailing white space dropped."""
    return _body([line.rstrip("\r") for line in text.splitlines()])
