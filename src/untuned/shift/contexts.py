"""How the base model is shown a query in a shift analysis (plain, AlignTDS's, URIAL's), an answer's end
written as text, and an answer's tokens as the parts of its text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from untuned.conversation import Conversation
from untuned.prompt import PromptSet

ContextKind = Literal["plain", "urial", "aligntds"]
# The base model's context in the paper's analysis (Re-Align/AlignTDS, src/logit_analysis.py with
# --enable_template), character for character: the query in a fenced block, the answer's fence opened.
ALIGNTDS_CONTEXT = "# Query: \n ```{query}``` \n\n \n# Answer: \n ```"
# Texts that mark the end of an answer in other tools' files (a generated "</s>" kept as text): the end is
# scored as the end position, never as the ordinary tokens these texts would tokenize into.
END_MARKERS = ("</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<eos>")


def plain_context(query: str) -> str:
    """The query as plain text, then a blank line: what an answer follows without URIAL (untuned's)."""
    return f"{query.strip()}\n\n"


def aligntds_context(query: str) -> str:
    """The paper's analysis' base context for ``query`` (ALIGNTDS_CONTEXT; the query as it is, not stripped)."""
    return ALIGNTDS_CONTEXT.format(query=query)


def without_end_marker(answer: str) -> tuple[str, bool]:
    """The answer without a trailing end marker (END_MARKERS), and whether it had one."""
    stripped = answer.rstrip()
    for marker in END_MARKERS:
        if stripped.endswith(marker):
            return stripped[: -len(marker)], True
    return answer, False


def urial_context(prompt: PromptSet, query: str) -> str:
    conversation = Conversation(prompt)
    conversation.add_user(query)
    return conversation.render().text


def token_texts(detokenize: Callable[[Sequence[int]], str], ids: Sequence[int], *, window: int = 4) -> list[str]:
    """Each token's part of the text ``ids`` decode to, so that the parts join to it: a character whose bytes
    span tokens shows whole at its last token (the ones before show ""). Each token is decoded with up to
    ``window`` tokens before it, so the cost stays linear and a tokenizer's leading-space rule applies alike."""
    parts: list[str] = []
    shown = 0  # the first token whose text is not out yet
    for i in range(len(ids)):
        start = max(0, shown - window)
        before = detokenize(ids[start:shown]) if shown > start else ""
        text = detokenize(ids[start : i + 1])
        last = i == len(ids) - 1
        if not last and (text.endswith("\ufffd") or not text.startswith(before)):
            parts.append("")  # a character not complete yet
            continue
        parts.append(text[len(before) :])
        shown = i + 1
    return parts
