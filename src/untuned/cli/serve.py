"""``untuned serve``: the OpenAI-compatible server and its web chat page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from untuned.cli.common import LOADING, SAMPLING, ModelOptions, err, friendly, model_options
from untuned.conversation import SystemMode
from untuned.prompt import load_prompt


def default_parallel() -> int:
    """Requests decoded together by default: on a CPU, batching pays until about four per core, up to 8."""
    return min(8, 4 * len(os.sched_getaffinity(0)))


Host = Annotated[str, typer.Option("--host", help="Address to bind; 127.0.0.1 keeps it on this machine.")]
Port = Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="UNTUNED_API_KEY", help="Require 'Authorization: Bearer KEY' on all but /health and /."),
]
Name = Annotated[str | None, typer.Option("--name", help="Model id to report (default: from --model).")]
SystemModeOption = Annotated[
    SystemMode,
    typer.Option("--system-mode", help="A client's system message is appended to the URIAL system text or replaces it."),
]
Parallel = Annotated[
    int | None,
    typer.Option(
        "--parallel",
        min=1,
        max=64,
        help="Requests answered at once, decoded in one batch by a local model (default: four per core, at most 8).",
    ),
]
MaxWaiting = Annotated[int, typer.Option("--max-waiting", min=0, help="Requests that may queue (more: 503).")]
Timeout = Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds a request may take, queueing included.")]
MaxTokensLimit = Annotated[int | None, typer.Option("--max-tokens-limit", min=1, help="Cap on max_tokens.")]
Cors = Annotated[list[str] | None, typer.Option("--cors", help="Allow this origin (repeatable); off by default.")]
Aligned = Annotated[
    str | None,
    typer.Option(
        "--aligned",
        help="An aligned (instruct) model (a --model spec) answering in its own chat template when a request names it "
        "in 'model'; the chat page shows its answer beside the base model's.",
    ),
]
AllowHost = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-host",
        help="Another name requests may address in their Host header (repeatable), beside the bound address and "
        "localhost; others get 403 (a page whose name rebinds to this machine cannot use the server).",
    ),
]
StallAfter = Annotated[
    float,
    typer.Option("--stall-after", min=1.0, help="Seconds with work and no progress before /health calls the engine stalled."),
]
EngineProcess = Annotated[
    bool,
    typer.Option(
        "--engine-process/--in-process",
        help="Run a local model in a supervised process of its own, restarted if it crashes (the server and the other "
        "clients go on); --in-process loads it in the server's process.",
    ),
]
PromptFiles = Annotated[
    list[Path] | None,
    typer.Option("--prompt-file", help="Another .urial prompt set requests may name (repeatable), beside the bundled ones."),
]


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(host: str, extra: list[str]) -> tuple[str, ...] | None:
    """The names requests may address: the bound address and localhost, and ``extra``. Bound to every
    interface (0.0.0.0, ::) the server cannot know its names: any, unless ``extra`` lists them."""
    if host in ("0.0.0.0", "::", "") and not extra:
        return None
    return tuple(dict.fromkeys([*LOOPBACK_NAMES, host, *extra]))


@friendly
@model_options(*LOADING, "prompt", *(name for name in SAMPLING if name != "stop"), "verbose")
def serve_command(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    api_key: ApiKey = None,
    name: Name = None,
    system_mode: SystemModeOption = "append",
    parallel: Parallel = None,
    max_waiting: MaxWaiting = 16,
    timeout: Timeout = 300.0,
    max_tokens_limit: MaxTokensLimit = None,
    cors: Cors = None,
    aligned: Aligned = None,
    prompt_files: PromptFiles = None,
    allow_host: AllowHost = None,
    stall_after: StallAfter = 60.0,
    engine_process: EngineProcess = True,
    *,
    options: ModelOptions,
) -> None:
    """Serve an OpenAI-compatible chat API and a web chat page (at /) over a URIAL-aligned base model.

    --max-tokens is the default of a chat request that names none."""
    from untuned.backends import MemoryReporting
    from untuned.server import ServerConfig, serve

    model = options.model
    options.load["parallel"] = parallel or default_parallel()
    options.supervised = engine_process
    config = ServerConfig(
        model_name=name or ("gemma-3-270m-urial" if model == "default" else model.rstrip("/").rsplit("/", 1)[-1]),
        api_key=api_key,
        system_mode=system_mode,
        parallel=options.load["parallel"],
        max_waiting=max_waiting,
        request_timeout=timeout,
        default_max_tokens=options.sampling().max_tokens,
        max_tokens_limit=max_tokens_limit,
        cors_origins=tuple(cors or ()),
        prompt_files=tuple(str(p) for p in prompt_files or ()),
        allowed_hosts=allowed_hosts(host, allow_host or []),
        stall_seconds=stall_after,
    )  # checked before the model loads
    for extra in prompt_files or ():  # a bad prompt file is refused before the model loads
        load_prompt(extra)
    assistant = options.assistant()
    err.print(
        f"untuned: serving {config.model_name} (prompt {assistant.prompt.name}, {config.parallel} requests at once) "
        f"on http://{host}:{port}/  API at http://{host}:{port}/v1"
    )
    if isinstance(assistant.backend, MemoryReporting):
        err.print(f"untuned: {assistant.backend.kv_summary}")
    second = None
    if aligned:
        from untuned.assistant import Assistant

        aligned_model = options.load_model(aligned)  # it answers in its own chat template
        second = Assistant(aligned_model, assistant.prompt, assistant.sampling, check_fits=False)
        err.print(f"untuned: aligned model {second.backend.name} answers requests whose model is its name")
    serve(assistant, config, aligned=second, host=host, port=port, log_level="info" if options.verbose else "warning")
