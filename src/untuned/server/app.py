"""The FastAPI application: OpenAI-compatible endpoints over an :class:`~untuned.Assistant`.

``POST /v1/chat/completions`` turns the messages into a URIAL conversation; ``POST
/v1/completions`` continues raw text with the base model; ``GET /v1/models``, ``GET /health``,
the OpenAPI schema at ``/openapi.json`` and the chat page at ``/``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from untuned.assistant import Assistant, Completion
from untuned.backends import Sampling
from untuned.conversation import Conversation, RenderedPrompt, SystemMode
from untuned.errors import BadRequest, ModelFailure, QueueFull, RequestTimeout
from untuned.server.guard import Guard
from untuned.server.logprobs import chat_logprobs, completion_logprobs
from untuned.server.schema import (
    ChatChoice,
    ChatMessageOut,
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    EngineLoad,
    ErrorResponse,
    Health,
    Message,
    ModelCard,
    ModelList,
    TextChoice,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
    error_json,
    explain,
    new_id,
    now,
)
from untuned.server.streaming import JobStream, raise_for, sse, usage
from untuned.server.worker import Gate, Job

log = logging.getLogger(__name__)


class ServerConfig(BaseModel):
    """How ``untuned serve`` behaves; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field("untuned", description="Model id reported by /v1/models and in responses.")
    api_key: SecretStr | None = Field(None, description="If set, every endpoint but /health and / needs 'Bearer <key>'.")
    system_mode: SystemMode = Field(
        "append", description="A client system message is appended to the URIAL system text, or replaces it."
    )
    parallel: int | None = Field(None, ge=1, description="Requests answered at once (None: the model's parallel slots).")
    max_waiting: int = Field(16, ge=0, description="Requests that may queue for the model; more get 503 + Retry-After.")
    request_timeout: float = Field(300.0, gt=0, description="Seconds a request may take, queueing included.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (413 beyond).")
    default_max_tokens: int = Field(512, ge=1, description="max_tokens when a chat request names none.")
    max_tokens_limit: int | None = Field(None, ge=1, description="Cap on any request's max_tokens (None: the context).")
    cors_origins: tuple[str, ...] = Field((), description="Origins allowed by CORS; empty turns CORS off.")


ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 413, 503, 504)}


def build_conversation(assistant: Assistant, messages: list[Message], mode: SystemMode) -> Conversation:
    """Map OpenAI messages onto a URIAL conversation (system text, then alternating turns)."""
    conversation = assistant.conversation()
    system = [m.text.strip() for m in messages if m.role in ("system", "developer") and m.text.strip()]
    if system:
        client = "\n\n".join(system)
        base = assistant.prompt.system.strip()
        conversation.system = client if mode == "replace" or not base else f"{base}\n\n{client}"
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue
        text = message.text.strip()
        if message.role == "user" and not text:
            raise BadRequest(f"messages[{index}] is an empty user message", param=f"messages.{index}.content")
        if turns and turns[-1][0] == message.role:  # consecutive turns of one role are joined
            turns[-1] = (message.role, f"{turns[-1][1]}\n\n{text}")
        else:
            turns.append((message.role, text))
    if not turns or turns[-1][0] != "user":
        raise BadRequest("the last message (after system messages) must be the user's", param="messages")
    if turns[0][0] != "user":
        raise BadRequest("the conversation must start with a user message (after system messages)", param="messages")
    for role, text in turns:
        (conversation.add_user if role == "user" else conversation.add_assistant)(text)
    return conversation


def create_app(assistant: Assistant, config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app serving ``assistant``. Run it with uvicorn, or use :func:`untuned.server.serve`."""
    config = config or ServerConfig()
    parallel = config.parallel or getattr(assistant.backend, "parallel", 1)
    gate = Gate(config.max_waiting, capacity=parallel)
    app = FastAPI(
        title="untuned",
        version="1",
        summary="An OpenAI-compatible chat API over a base model aligned in context (URIAL).",
    )
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"], allow_headers=["*"])
    key = config.api_key.get_secret_value() if config.api_key else None
    app.add_middleware(Guard, api_key=key, max_body_bytes=config.max_body_bytes, open_paths=("/health", "/"))
    model = config.model_name

    descriptions = {name: field.description or "" for record in (ChatRequest, CompletionRequest)
                    for name, field in record.model_fields.items()}  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if errors and errors[0].get("type") == "json_invalid":
            return JSONResponse(error_json(f"the body is not valid JSON: {errors[0]['msg']}"), status_code=400)
        message, param = explain(errors, descriptions)
        return JSONResponse(error_json(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_json(str(exc.detail), kind="not_found_error" if exc.status_code == 404 else "invalid_request_error"),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(error_json(str(exc), param=exc.param, code=exc.code), status_code=exc.status)

    @app.exception_handler(QueueFull)
    async def busy(_: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(
            error_json(str(exc), kind="server_busy", code="queue_full"),
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(RequestTimeout)
    async def too_slow(_: Request, exc: RequestTimeout) -> JSONResponse:
        return JSONResponse(error_json(str(exc), kind="timeout", code="timeout"), status_code=504)

    @app.exception_handler(ModelFailure)
    async def model_failed(_: Request, exc: ModelFailure) -> JSONResponse:
        return JSONResponse(error_json(str(exc), kind="server_error", code="model_failure"), status_code=500)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return JSONResponse(error_json(f"internal error: {type(exc).__name__}", kind="server_error"), status_code=500)

    chat_page = resources.files("untuned.server").joinpath("chat.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(chat_page)

    def engine_load() -> EngineLoad | None:
        stats = getattr(assistant.backend, "stats", None)
        return EngineLoad(**dataclasses.asdict(stats())) if stats is not None else None

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(model=model, prompt=assistant.prompt.name, parallel=parallel, active=gate.active, waiting=gate.waiting,
                      engine=engine_load())  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse, responses=ERRORS)
    async def metrics() -> PlainTextResponse:
        """The load and counters in Prometheus' text format."""
        return PlainTextResponse(prometheus_text(parallel, gate, engine_load()), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS)
    async def models() -> ModelList:
        card = ModelCard(id=model, created=now(), prompt=assistant.prompt.name, context_length=assistant.backend.context_length)
        return ModelList(data=[card])

    @app.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        ids = await asyncio.to_thread(assistant.backend.tokenize, body.text, add_special=body.special)
        return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=assistant.backend.context_length)

    @app.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
    async def detokenize(body: DetokenizeRequest) -> DetokenizeResponse:
        text = await asyncio.to_thread(assistant.backend.detokenize, body.tokens)
        return DetokenizeResponse(prompt=text, content=text)

    def sampling_for(body: ChatRequest | CompletionRequest, default_max: int, *, logprobs: int) -> Sampling:
        wanted = getattr(body, "max_completion_tokens", None) or body.max_tokens or default_max
        if config.max_tokens_limit is not None:
            wanted = min(wanted, config.max_tokens_limit)
        update: dict[str, object] = {"max_tokens": wanted, "stop": tuple(body.stops), "logprobs": logprobs}
        schema = body.response_format.schema_text if body.response_format else None
        if schema is not None:
            check = getattr(assistant.backend, "check_schema", None)
            if check is None:
                raise BadRequest(f"response_format {body.response_format.type} needs a backend that constrains its "
                                 f"output with a grammar (llama.cpp); {assistant.backend.name} cannot",
                                 param="response_format")  # fmt: skip
            try:
                check(schema)
            except ValueError as exc:
                raise BadRequest(f"response_format: {exc}", param="response_format") from None
            update["json_schema"] = schema
        for name in ("temperature", "top_p", "seed"):
            if getattr(body, name) is not None:
                update[name] = getattr(body, name)
        return assistant.sampling.model_copy(update=update)

    async def start(begin: Callable[[], Completion]) -> tuple[Job, AsyncIterator]:
        deadline = time.monotonic() + config.request_timeout
        await gate.enter(config.request_timeout)
        job = Job(begin, gate)
        return job, job.events(deadline)

    async def first_event(job: Job, events: AsyncIterator) -> tuple[str, object]:
        try:
            kind, value = await anext(events)
        except BaseException:
            job.cancel.set()
            raise
        if kind == "error":
            raise_for(value)
        return kind, value

    async def run(body: ChatRequest | CompletionRequest, begin: Callable[[], Completion], *, chat: bool):
        """The job's stream, or its whole answer: ``(response, None)`` when streaming, else ``(None, (text, completion))``."""
        job, events = await start(begin)
        kind, value = await first_event(job, events)
        if body.stream:
            ident, created = new_id("chatcmpl" if chat else "cmpl"), now()
            return JobStream(job, sse(job, events, (kind, value), ident, created, model, chat, body)), None
        parts = [value] if kind == "text" else []
        try:
            while kind == "text":
                kind, value = await anext(events)
                if kind == "text":
                    parts.append(value)
                elif kind == "error":
                    raise_for(value)
        finally:
            job.cancel.set()
        return None, ("".join(parts), job.completion)

    def seeded(sampling: Sampling, n: int) -> list[Sampling]:
        """One sampling per choice: seed, seed + 1, ... when a seed is given, else each its own random one."""
        if n == 1:
            return [sampling]
        return [sampling.model_copy(update={"seed": (sampling.seed + i) % 2**31 if sampling.seed is not None else None})
                for i in range(n)]  # fmt: skip

    async def choices(body, begin: Callable[[Sampling], Completion], samplings: list[Sampling], *, chat: bool):
        """Every choice's (text, completion), the jobs run side by side; the first error ends them all."""
        tasks = [asyncio.ensure_future(run(body, lambda s=s: begin(s), chat=chat)) for s in samplings]
        try:
            return [whole for _, whole in await asyncio.gather(*tasks)]
        except BaseException:
            for task in tasks:  # each stops its job on the way out
                task.cancel()
            raise

    def total_usage(completions: list[Completion | None]) -> Usage:
        """The prompt counted once (one prompt), every choice's tokens added."""
        first = usage(completions[0])
        produced = sum(c.completion_tokens for c in completions if c is not None)
        return Usage(prompt_tokens=first.prompt_tokens, completion_tokens=produced, total_tokens=first.prompt_tokens + produced)

    @app.post("/v1/chat/completions", response_model=ChatResponse, responses=ERRORS)
    async def chat_completions(body: ChatRequest):
        conversation = build_conversation(assistant, body.messages, config.system_mode)
        sampling = sampling_for(body, config.default_max_tokens, logprobs=max(body.top_logprobs or 0, 1) if body.logprobs else 0)
        if body.stream:
            streamed, _ = await run(body, lambda: assistant.complete(conversation, sampling=sampling), chat=True)
            return streamed
        made = await choices(body, lambda s: assistant.complete(conversation, sampling=s), seeded(sampling, body.n), chat=True)
        answers = []
        for index, (_, completion) in enumerate(made):
            logprobs = chat_logprobs(completion.logprobs, body.top_logprobs or 0) if body.logprobs and completion else None
            message = ChatMessageOut(content=completion.text if completion else "")
            answers.append(ChatChoice(index=index, message=message, logprobs=logprobs,
                                      finish_reason=completion.finish_reason if completion else "stop"))  # fmt: skip
        return ChatResponse(id=new_id("chatcmpl"), created=now(), model=model, choices=answers,
                            usage=total_usage([completion for _, completion in made]))  # fmt: skip

    @app.post("/v1/completions", response_model=CompletionResponse, responses=ERRORS)
    async def completions(body: CompletionRequest):
        backend, ids, text = assistant.backend, body.token_ids, body.text
        if text is not None and not text:
            raise BadRequest("prompt is empty", param="prompt")
        vocab = getattr(backend, "vocab_size", None)
        wrong = next(((i, t) for i, t in enumerate(ids or []) if vocab is not None and t >= vocab), None)
        if wrong is not None:
            raise BadRequest(f"prompt: token id {wrong[1]} at position {wrong[0]} is outside the model's vocabulary "
                             f"(0-{vocab - 1})", param="prompt")  # fmt: skip
        top = body.logprobs or 0
        sampling = sampling_for(body, 16, logprobs=max(top, 1) if body.logprobs is not None else 0)
        rendered = RenderedPrompt(prefix="", body=text or "", ids=tuple(ids) if ids is not None else None)
        echoed = (ids if ids is not None else backend.tokenize(text, add_special=True)) if body.echo else None
        prompt_text = (text if text is not None else backend.detokenize(ids)) if body.echo else ""
        if body.stream:
            streamed, _ = await run(body, lambda: assistant.complete_prompt(rendered, sampling=sampling, clean=False),
                                    chat=False)  # fmt: skip
            return streamed
        if body.echo and body.max_tokens == 0:
            made: list[tuple[str, Completion | None]] = [("", None)]
        else:
            begin = lambda s: assistant.complete_prompt(rendered, sampling=s, clean=False)  # noqa: E731
            made = await choices(body, begin, seeded(sampling, body.n), chat=False)
        answers = []
        for index, (generated, completion) in enumerate(made):
            logprobs = None
            if body.logprobs is not None:
                await gate.enter(config.request_timeout)  # scoring the prompt takes the model too
                started = time.perf_counter()
                try:
                    logprobs = await asyncio.to_thread(completion_logprobs, backend, echoed,
                                                       completion.logprobs if completion else [], top,
                                                       as_ids=body.return_tokens_as_token_ids)  # fmt: skip
                finally:
                    gate.leave(time.perf_counter() - started)
            answers.append(TextChoice(index=index, text=prompt_text + generated, logprobs=logprobs,
                                      finish_reason=completion.finish_reason if completion else "length"))  # fmt: skip
        completions = [completion for _, completion in made]
        if completions[0] is None:
            prompt_tokens = len(echoed) if echoed is not None else 0
            use = Usage(prompt_tokens=prompt_tokens, completion_tokens=0, total_tokens=prompt_tokens)
        else:
            use = total_usage(completions)
        return CompletionResponse(id=new_id("cmpl"), created=now(), model=model, usage=use, choices=answers)

    return app


_METRICS = (
    ("untuned_parallel_slots", "gauge", "Requests the server answers at once."),
    ("untuned_requests_active", "gauge", "Requests being answered now."),
    ("untuned_requests_waiting", "gauge", "Requests waiting for a slot."),
    ("untuned_engine_busy_slots", "gauge", "Slots of the model's batch holding a request."),
    ("untuned_engine_requests_total", "counter", "Requests the model's engine has started."),
    ("untuned_engine_generated_tokens_total", "counter", "Tokens generated."),
    ("untuned_engine_prompt_tokens_total", "counter", "Prompt tokens evaluated (prefixes and bodies)."),
    ("untuned_engine_prefix_cache_hits_total", "counter", "Requests whose URIAL prefix was already evaluated."),
    ("untuned_engine_prefix_cache_misses_total", "counter", "Prefixes evaluated."),
)


def prometheus_text(parallel: int, gate: Gate, engine: EngineLoad | None) -> str:
    values = [parallel, gate.active, gate.waiting]
    if engine is not None:
        values += [engine.busy_slots, engine.requests, engine.generated_tokens, engine.prompt_tokens, engine.prefix_hits,
                   engine.prefix_misses]  # fmt: skip
    lines = []
    for (name, kind, text), value in zip(_METRICS, values):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"
