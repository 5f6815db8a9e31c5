"""Rendering a model's own chat template (the Jinja text in its GGUF metadata or tokenizer config).

URIAL needs no chat template; an *instruct* model does: the local judge talks to one, and an
aligned model's answers are analysed or generated inside its template. The template runs in a
sandbox, with the variables and helpers Hugging Face's templates expect.
"""

from __future__ import annotations

import json
from datetime import datetime

from untuned.conversation import RenderedPrompt
from untuned.errors import ChatTemplateError


def render_chat_template(
    template: str, messages: list[dict[str, str]], *, bos_token: str = "", eos_token: str = "", add_generation_prompt: bool = True
) -> str:
    """The text ``template`` makes of ``messages`` (``[{"role": ..., "content": ...}]``), ending where
    the assistant's next answer begins when ``add_generation_prompt``."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(f"the chat template refused the messages: {message}")

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
    try:
        compiled = environment.from_string(template)
        return compiled.render(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            raise_exception=raise_exception,
            strftime_now=lambda fmt: datetime.now().strftime(fmt),
        )
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template failed: {exc}") from exc


def with_shared_head(full: str, head: str | None) -> RenderedPrompt:
    """``full`` as a prompt whose cacheable prefix is ``head`` (the rendering of the leading messages that
    many requests share), where the template renders them as the start of the whole; else no prefix."""
    if head and full.startswith(head) and len(head) < len(full):
        return RenderedPrompt(prefix=head, body=full[len(head) :], special_tokens=True)
    return RenderedPrompt(prefix="", body=full, special_tokens=True)
