"""``untuned serve``: the OpenAI-compatible server. Registered on ``untuned.cli.app``."""

from __future__ import annotations

from typing import Annotated

import typer

from untuned.cli import (
    ApiKeyEnv,
    BackendName,
    Device,
    Model,
    NCtx,
    Prompt,
    RemoteModel,
    RepetitionPenalty,
    Seed,
    Temperature,
    TopK,
    TopP,
    Verbose,
    _assistant,
    _friendly,
    app,
    err,
)  # fmt: skip


@app.command("serve")
@_friendly
def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to bind; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="UNTUNED_API_KEY", help="Require 'Authorization: Bearer KEY' on all but /health and /.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Model id to report (default: from --model).")] = None,
    system_mode: Annotated[str, typer.Option(
        "--system-mode", help="A client's system message is 'append'ed to the URIAL system text or 'replace's it.")] = "append",
    max_waiting: Annotated[int, typer.Option("--max-waiting", min=0, help="Requests that may queue (more: 503).")] = 16,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds a request may take, queueing included.")] = 300.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Default max_tokens of a chat request.")] = 512,
    max_tokens_limit: Annotated[int | None, typer.Option("--max-tokens-limit", min=1, help="Cap on max_tokens.")] = None,
    cors: Annotated[list[str] | None, typer.Option("--cors", help="Allow this origin (repeatable); off by default.")] = None,
    model: Model = "default", backend: BackendName = None, remote_model: RemoteModel = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY", n_ctx: NCtx = None, device: Device = "auto",
    prompt: Prompt = "helpful", temperature: Temperature = 0.0, top_p: TopP = 1.0, top_k: TopK = 0,
    repetition_penalty: RepetitionPenalty = 1.1, seed: Seed = None, verbose: Verbose = False,
) -> None:  # fmt: skip
    """Serve an OpenAI-compatible chat API and a web chat page (at /) over a URIAL-aligned base model."""
    from untuned.server import ServerConfig, serve

    config = ServerConfig(
        model_name=name or ("gemma-3-270m-urial" if model == "default" else model.rstrip("/").rsplit("/", 1)[-1]),
        api_key=api_key,
        system_mode=system_mode,
        max_waiting=max_waiting,
        request_timeout=timeout,
        default_max_tokens=max_tokens,
        max_tokens_limit=max_tokens_limit,
        cors_origins=tuple(cors or ()),
    )  # fmt: skip  (checked before the model loads)
    assistant = _assistant(
        model=model, backend=backend, remote_model=remote_model, api_key_env=api_key_env, n_ctx=n_ctx, device=device,
        prompt=prompt, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens,
        repetition_penalty=repetition_penalty, seed=seed, stop=None, verbose=verbose,
    )  # fmt: skip
    err.print(
        f"untuned: serving {config.model_name} (prompt {assistant.prompt.name}) on http://{host}:{port}/  "
        f"API at http://{host}:{port}/v1"
    )
    serve(assistant, config, host=host, port=port, log_level="info" if verbose else "warning")
