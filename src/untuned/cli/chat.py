"""``untuned ask``, ``untuned chat``, ``untuned prompts`` and ``untuned backends``."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from untuned.assistant import Chat, Completion
from untuned.backends import backend_names
from untuned.cli.common import LOADING, ModelOptions, err, friendly, model_options, out, setup_logging
from untuned.conversation import Conversation, render_prefix
from untuned.errors import UntunedError
from untuned.prompt import build_prompt_set, builtin_prompt_names, load_prompt, read_examples

ShowPrompt = Annotated[bool, typer.Option("--show-prompt", help="Print the full prompt sent to the model (on stderr).")]
CHAT_HELP = "Commands: /reset clears the conversation, /prompt NAME switches prompt set, /exit quits."


def stream_answer(completion: Completion) -> None:
    """Print the answer as it streams, then a summary on stderr: finish, tokens, time to first token, speed."""
    for chunk in completion:
        out.print(chunk, end="", markup=False)
    out.print()
    parts = [str(completion.finish_reason), f"{completion.completion_tokens} tokens"]
    if completion.first_token_seconds is not None:
        parts.append(f"first token {completion.first_token_seconds:.2f} s")
    if completion.decode_tokens_per_second is not None:
        parts.append(f"decoding {completion.decode_tokens_per_second:.1f} tok/s")
    err.print(f"[{' · '.join(parts)}]", markup=False, style="dim")


@friendly
@model_options()
def ask(
    question: Annotated[str, typer.Argument(help="The question; '-' reads it from stdin.")],
    show_prompt: ShowPrompt = False,
    *,
    options: ModelOptions,
) -> None:
    """Stream one answer to QUESTION from a base model aligned in context."""
    if question == "-":
        question = sys.stdin.read()
    if not question.strip():
        raise UntunedError("the question is empty.")
    assistant = options.assistant()
    if show_prompt:
        conversation = assistant.conversation()
        conversation.add_user(question)
        err.print(conversation.render().text, markup=False, style="dim")
    stream_answer(assistant.ask(question))


def _lines(interactive: bool) -> Iterable[str]:
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and line == "":
            return
        yield line.rstrip("\n")


@friendly
@model_options()
def chat(show_prompt: ShowPrompt = False, *, options: ModelOptions) -> None:
    """Multi-turn chat in the terminal. Reads one message per line when stdin is piped."""
    assistant = options.assistant()
    session = Chat(assistant)
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(f"[dim]{assistant.backend.name} · prompt '{assistant.prompt.name}' · {CHAT_HELP}[/]", markup=True)
    for line in _lines(interactive):
        message = line.strip()
        if not message:
            continue
        if message.startswith("/"):
            if _chat_command(session, message):
                break
            continue
        if show_prompt:
            preview = Conversation(session.conversation.prompt, list(session.conversation.turns))
            preview.add_user(message)
            err.print(preview.render().text, markup=False, style="dim")
        try:
            stream_answer(session.send(message))
        except KeyboardInterrupt:
            err.print("\n[dim](answer interrupted)[/]", markup=True)
        out.print()


def _chat_command(session: Chat, command: str) -> bool:
    """Run a /command; return True to end the chat."""
    name, _, argument = command.partition(" ")
    if name in ("/exit", "/quit"):
        return True
    if name == "/reset":
        session.reset()
        err.print("[dim](conversation cleared)[/]", markup=True)
    elif name == "/prompt" and argument.strip():
        try:
            session.use_prompt(load_prompt(argument.strip()))
            err.print(f"[dim](prompt set: {session.assistant.prompt.name})[/]", markup=True)
        except UntunedError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True)
    else:
        err.print(f"[dim]{CHAT_HELP}[/]", markup=True)
    return False


prompts_app = typer.Typer(help="List, show and build URIAL prompt sets.", no_args_is_help=True)


@prompts_app.command("list")
@friendly
@model_options(*LOADING)
def prompts_list(*, options: ModelOptions) -> None:
    """Bundled prompt sets with their number of examples (K) and prefix length in the model's tokens."""
    setup_logging(options.verbose)
    tokenizer = options.load_model()
    table = Table("name", "K", "tokens", "description", title=f"prompt sets (tokens of {tokenizer.name})")
    for name in builtin_prompt_names():
        prompt_set = load_prompt(name)
        count = len(tokenizer.tokenize(render_prefix(prompt_set), add_special=True))
        table.add_row(name, str(prompt_set.k), str(count), prompt_set.description)
    out.print(table)


@prompts_app.command("show")
@friendly
def prompts_show(
    name: Annotated[str, typer.Argument(help="Bundled prompt set name or a .urial file.")],
    rendered: Annotated[bool, typer.Option("--rendered", help="Show the prefix exactly as the model sees it.")] = False,
) -> None:
    """Print a prompt set in the .urial file format (or as rendered for the model)."""
    prompt_set = load_prompt(name)
    out.print(render_prefix(prompt_set) if rendered else prompt_set.to_text(), markup=False)


@prompts_app.command("build")
@friendly
@model_options(*LOADING)
def prompts_build(
    examples: Annotated[Path, typer.Argument(help="JSON/JSONL of query and answer (or chat messages) rows.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="The .urial file to write.")],
    system: Annotated[Path | None, typer.Option("--system", help="A text file holding the system text.")] = None,
    k: Annotated[int | None, typer.Option("-k", min=0, help="How many examples (default: all).")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Draw the k examples at random with this seed (default: the first k, in order).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The set's name (default: the file's stem).")] = None,
    *,
    options: ModelOptions,
) -> None:
    """Build a prompt set from your own examples (3 or 300: many-shot alignment to your taste), checked to
    fit the model's context window with room to answer."""
    setup_logging(options.verbose)
    text = system.read_text(encoding="utf-8") if system else ""
    built = build_prompt_set(read_examples(examples), name=name or output.stem, system=text, k=k, seed=seed)
    model = options.load_model()
    tokens = len(model.tokenize(render_prefix(built), add_special=True))
    room = (model.context_length or tokens + 1) - tokens
    if room < 256:  # a question and an answer need room too
        window = f"{model.name}'s {model.context_length}-token window"
        raise UntunedError(
            f"the rendered prefix takes {tokens} tokens of {window}: {256 - room} too many to leave 256 for a "
            "question and its answer; use a smaller -k"
        )
    output.write_text(built.to_text(), encoding="utf-8")
    out.print(f"{output}: {built.k} examples, {tokens} tokens of {model.name} ({room} left for the conversation)")


def backends() -> None:
    """List the available backends (built in and from plugins)."""
    for name in backend_names():
        out.print(name)
