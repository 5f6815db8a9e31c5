"""The ``untuned`` command line: a thin layer over the library.

Errors from the library (:class:`untuned.errors.UntunedError`) and invalid settings are turned
into a one-line message and exit code 2 in one place, :func:`_friendly`.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from untuned.assistant import Assistant, Chat, Completion
from untuned.backend import LoadOptions, Sampling, backend_names, load_backend
from untuned.conversation import Conversation, render_prefix
from untuned.errors import UntunedError
from untuned.prompt import builtin_prompt_names, load_prompt

app = typer.Typer(
    help="Chat with untuned base LLMs through URIAL in-context alignment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
prompts_app = typer.Typer(help="List and show URIAL prompt sets.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., object])


def _friendly(command: F) -> F:
    """Show library errors as one line on stderr and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UntunedError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            err.print(f"[bold red]error:[/] invalid setting: {problems}", markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


# --- options shared by the commands ---------------------------------------------------------

Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="UNTUNED_MODEL",
        help="'default' (bundled gemma-3-270m base), a .gguf path, hf:org/name, a model folder, or http(s)://host/v1.",
    ),
]
BackendName = Annotated[
    str | None, typer.Option("--backend", "-b", help="llama.cpp, transformers or remote (default: from --model).")
]
RemoteModel = Annotated[str | None, typer.Option("--remote-model", help="Model name on a remote server (default: its first).")]
ApiKeyEnv = Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the remote server's API key.")]
NCtx = Annotated[int | None, typer.Option("--n-ctx", min=64, help="Context window in tokens (default: model's, at most 8192).")]
Device = Annotated[str, typer.Option("--device", help="transformers backend: cpu, cuda, cuda:N or auto.")]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="Bundled prompt set name or a .urial file.")]
Temperature = Annotated[float, typer.Option("--temperature", "-t", min=0.0, help="0 = greedy.")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")]
TopK = Annotated[int, typer.Option("--top-k", min=0, help="Sample among the k likeliest tokens; 0 = off.")]
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Most new tokens per answer.")]
RepetitionPenalty = Annotated[float, typer.Option("--repetition-penalty", help="1 = off; 1.1 is a mild default.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed for sampling.")]
Stop = Annotated[list[str] | None, typer.Option("--stop", help="Extra stop string (repeatable).")]
ShowPrompt = Annotated[bool, typer.Option("--show-prompt", help="Print the full prompt sent to the model (on stderr).")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log what the backend does (on stderr).")]


def _progress() -> Progress:
    """The progress bar of long commands, on stderr: description, bar, n/total, a note, elapsed, ETA."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    return Progress(*columns, console=err)


def _assistant(
    *,
    model: str,
    backend: str | None,
    remote_model: str | None,
    api_key_env: str,
    n_ctx: int | None,
    device: str,
    prompt: str,
    temperature: float,
    top_p: float,
    top_k: int,
    max_tokens: int,
    repetition_penalty: float,
    seed: int | None,
    stop: list[str] | None,
    verbose: bool,
) -> Assistant:
    """What ask and chat share: logging, settings, the prompt set (checked first), the model."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")
    sampling = Sampling(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_tokens=max_tokens,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=tuple(stop or ()),
    )
    prompt_set = load_prompt(prompt)  # fail on a bad prompt before loading a model
    options = LoadOptions(backend=backend, remote_model=remote_model, api_key_env=api_key_env, n_ctx=n_ctx, device=device)
    with err.status(f"loading {model} …"):
        return Assistant(load_backend(model, options), prompt_set, sampling)


def _stream_answer(completion: Completion) -> None:
    for chunk in completion:
        out.print(chunk, end="", markup=False)
    out.print()
    parts = [str(completion.finish_reason), f"{completion.completion_tokens} tokens"]
    if completion.first_token_seconds is not None:
        parts.append(f"first token {completion.first_token_seconds:.2f} s")
    if completion.decode_tokens_per_second is not None:
        parts.append(f"decoding {completion.decode_tokens_per_second:.1f} tok/s")
    err.print(f"[{' · '.join(parts)}]", markup=False, style="dim")


@app.command()
@_friendly
def ask(
    question: Annotated[str, typer.Argument(help="The question; '-' reads it from stdin.")],
    model: Model = "default",
    backend: BackendName = None,
    remote_model: RemoteModel = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    n_ctx: NCtx = None,
    device: Device = "auto",
    prompt: Prompt = "helpful",
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    max_tokens: MaxTokens = 512,
    repetition_penalty: RepetitionPenalty = 1.1,
    seed: Seed = None,
    stop: Stop = None,
    show_prompt: ShowPrompt = False,
    verbose: Verbose = False,
) -> None:
    """Stream one answer to QUESTION from a base model aligned in context."""
    if question == "-":
        question = sys.stdin.read()
    if not question.strip():
        raise UntunedError("the question is empty.")
    assistant = _assistant(
        model=model,
        backend=backend,
        remote_model=remote_model,
        api_key_env=api_key_env,
        n_ctx=n_ctx,
        device=device,
        prompt=prompt,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_tokens=max_tokens,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=stop,
        verbose=verbose,
    )
    if show_prompt:
        conversation = assistant.conversation()
        conversation.add_user(question)
        err.print(conversation.render().text, markup=False, style="dim")
    _stream_answer(assistant.ask(question))


CHAT_HELP = "Commands: /reset clears the conversation, /prompt NAME switches prompt set, /exit quits."


def _lines(interactive: bool) -> Iterable[str]:
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and line == "":
            return
        yield line.rstrip("\n")


@app.command()
@_friendly
def chat(
    model: Model = "default",
    backend: BackendName = None,
    remote_model: RemoteModel = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    n_ctx: NCtx = None,
    device: Device = "auto",
    prompt: Prompt = "helpful",
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    max_tokens: MaxTokens = 512,
    repetition_penalty: RepetitionPenalty = 1.1,
    seed: Seed = None,
    stop: Stop = None,
    show_prompt: ShowPrompt = False,
    verbose: Verbose = False,
) -> None:
    """Multi-turn chat in the terminal. Reads one message per line when stdin is piped."""
    assistant = _assistant(
        model=model,
        backend=backend,
        remote_model=remote_model,
        api_key_env=api_key_env,
        n_ctx=n_ctx,
        device=device,
        prompt=prompt,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_tokens=max_tokens,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=stop,
        verbose=verbose,
    )
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
            _stream_answer(session.send(message))
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


@prompts_app.command("list")
@_friendly
def prompts_list(
    model: Model = "default",
    backend: BackendName = None,
    remote_model: RemoteModel = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
) -> None:
    """Bundled prompt sets with their number of examples (K) and prefix length in the model's tokens."""
    options = LoadOptions(backend=backend, remote_model=remote_model, api_key_env=api_key_env)
    with err.status(f"loading {model} for its tokenizer …"):
        tokenizer = load_backend(model, options)
    table = Table("name", "K", "tokens", "description", title=f"prompt sets (tokens of {tokenizer.name})")
    for name in builtin_prompt_names():
        prompt_set = load_prompt(name)
        count = len(tokenizer.tokenize(render_prefix(prompt_set), add_special=True))
        table.add_row(name, str(prompt_set.k), str(count), prompt_set.description)
    out.print(table)


@prompts_app.command("show")
@_friendly
def prompts_show(
    name: Annotated[str, typer.Argument(help="Bundled prompt set name or a .urial file.")],
    rendered: Annotated[bool, typer.Option("--rendered", help="Show the prefix exactly as the model sees it.")] = False,
) -> None:
    """Print a prompt set in the .urial file format (or as rendered for the model)."""
    prompt_set = load_prompt(name)
    out.print(render_prefix(prompt_set) if rendered else prompt_set.to_text(), markup=False)


@app.command("backends")
def backends() -> None:
    """List the available backends (built in and from plugins)."""
    for name in backend_names():
        out.print(name)


from untuned import cli_judge, cli_run, cli_serve, cli_shift  # noqa: E402,F401  (register the other commands)


def main() -> None:
    app()


if __name__ == "__main__":  # python -m untuned.cli: run the imported module, which has every command
    from untuned.cli import main as imported_main

    imported_main()
