"""The aligned model's context in AlignTDS's analysis: the string URIAL's inference code builds for the aligned
model's family (its ``adapt_utils.preprocess`` without an adapt mode), which AlignTDS reads as the ``input``
of URIAL's result files and encodes with the tokenizer's special tokens added.

The layouts are the families' prompt formats; the system prompt comes from the model's own files (a Llama-2-chat
chat template that carries its default system message) or from the user (``--aligned-system FILE``), never from
text written into this project. A layout that starts with ``<s>`` gives the aligned side two BOS tokens where the
tokenizer adds one of its own, as AlignTDS's pipeline reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from untuned.errors import UntunedError

FamilyName = Literal["llama-2-chat", "mistral-instruct", "vicuna"]


@dataclass(frozen=True)
class Family:
    """A family's prompt format: ``layout`` with ``{system}`` and ``{query}``; ``system`` how a system prompt's text
    enters it (absent: the empty string)."""

    name: FamilyName
    layout: str
    system: str
    marks: tuple[str, ...]  # texts of a chat template that identify the family

    def context(self, query: str, system_prompt: str | None) -> str:
        block = self.system.format(text=system_prompt) if system_prompt else ""
        return self.layout.format(system=block, query=query)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llama-2-chat", "<s>[INST] {system} \n {query} [/INST] ", "<<SYS>>\n{text}\n<</SYS>>\n", ("<<SYS>>",)),
        Family("mistral-instruct", "<s>[INST] {system} {query} [/INST]", "{text}", ("[INST]",)),
        Family("vicuna", "{system}\n USER: {query} \nASSISTANT:", "{text}", ("USER:", "ASSISTANT:")),
    )
}


@dataclass(frozen=True)
class AlignedContext:
    """What the aligned side reads before an answer in AlignTDS's protocol: its family's string with a system
    prompt (or none)."""

    family: Family
    system_prompt: str | None

    def text(self, query: str) -> str:
        return self.family.context(query, self.system_prompt)


def detect_family(template: str | None, model: str) -> Family:
    """The family whose marks the aligned model's chat template holds (the first listed that matches)."""
    for family in FAMILIES.values():
        if template and all(mark in template for mark in family.marks):
            return family
    raise UntunedError(
        f"cannot tell the prompt family of {model} from its chat template: give --aligned-family ({', '.join(FAMILIES)})"
    )


_DEFAULT_SYSTEM = re.compile(r"""set\s+system_message\s*=\s*(['"])((?:\\.|(?!\1).)*)\1""", re.DOTALL)


def template_system_prompt(template: str | None) -> str | None:
    """The default system message a chat template sets for itself (Llama-2-chat's ``{% set system_message = '...'
    %}`` where no system message is given), unescaped; None when it sets none."""
    for match in _DEFAULT_SYSTEM.finditer(template or ""):
        text = match.group(2)
        if "messages" in text:  # an expression, not a literal
            continue
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)
    return None
