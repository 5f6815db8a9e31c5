"""What every endpoint of ``untuned serve`` shares: the assistant, the settings, the gate in front of
the model and the counters, kept in ``app.state.serving`` (see :func:`serving`).

A request's answer is made by a :class:`~untuned.server.worker.Job`; :meth:`Serving.run` starts one
and gives its stream or its whole answer, :meth:`Serving.choices` several side by side (``n``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from untuned.assistant import Assistant, Completion
from untuned.backends import Backend, Batched, Sampling, SchemaConstrained, TokenPieces, prompt_ids
from untuned.conversation import RenderedPrompt, SystemMode
from untuned.errors import ConstraintError, EngineRestarted, UntunedError
from untuned.prompt import Example, PromptSet, builtin_prompt_names, load_prompt
from untuned.server.chat.wire import ChatRequest
from untuned.server.completions.wire import CompletionRequest
from untuned.server.crash_guard import CrashGuard, current_caller
from untuned.server.errors import BadRequest
from untuned.server.health.wire import CrashGuardOut, EngineProcessOut, Health
from untuned.server.metrics import Metrics
from untuned.server.monitor import Monitor
from untuned.server.streaming import JobStream, raise_for, sse, usage
from untuned.server.wire import InlinePromptSet, Usage, new_id, now
from untuned.server.worker import Gate, Job
from untuned.supervised import supervised_status


class ServerConfig(BaseModel):
    """How ``untuned serve`` behaves; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field("untuned", description="Model id reported by /v1/models and in responses.")
    api_key: SecretStr | None = Field(None, description="If set, every endpoint but /health, / and /docs needs 'Bearer <key>'.")
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
    prompt_files: tuple[str, ...] = Field(
        (), description="More prompt sets (.urial files) a request may name, beside the bundled ones."
    )
    allowed_hosts: tuple[str, ...] | None = Field(
        None,
        description="Host names a request may address (its Host header; others get 403, so that a web page whose "
        "name rebinds to this machine cannot use the server); None: any. untuned serve sets the bound address, "
        "localhost and --allow-host names.",
    )
    stall_seconds: float = Field(
        60.0, gt=0, description="/health calls the engine stalled when it has work and made no progress for this long."
    )
    body_timeout: float = Field(30.0, gt=0, description="Seconds a client may take to send its request's body (408 beyond).")
    max_connections: int = Field(256, ge=1, description="Connections open at once (uvicorn's limit; 503 beyond).")
    prep_parallel: int = Field(
        2, ge=1, description="Tokenizations, schema compilations and scorings of prompts run at once, off the event loop."
    )
    crash_limit: int = Field(3, ge=1, description="Crashes of the engine a client may cause in crash_window before 429.")
    crash_window: float = Field(600.0, gt=0, description="Seconds over which a client's crashes of the engine count.")


Body = ChatRequest | CompletionRequest


class Serving:
    """The shared state of the endpoints; see the module docstring."""

    def __init__(self, assistant: Assistant, config: ServerConfig, *, aligned: Assistant | None = None) -> None:
        self.assistant, self.config, self.model = assistant, config, config.model_name
        self.aligned = aligned  # an instruct model answering in its own chat template (model: its name)
        self.aligned_name = aligned.backend.name if aligned is not None else None
        backend = assistant.backend
        self.parallel = config.parallel or (backend.parallel if isinstance(backend, Batched) else 1)
        self.gate = Gate(config.max_waiting, capacity=self.parallel)
        # work on the prompt that grows with its size (tokenizing, compiling a schema) waits here, never on the event
        # loop or in its default thread pool: bounded, in order, with the request's time limit
        # (as many may wait there as the model's gate ever admits, so that a burst is refused by the model's gate, by
        # its documented numbers, and not earlier here)
        self.prep = Gate(self.parallel + config.max_waiting, capacity=config.prep_parallel)
        self._prep_threads = ThreadPoolExecutor(config.prep_parallel, thread_name_prefix="untuned-prep")
        self.crashes = CrashGuard(per_client=config.crash_limit, window=config.crash_window)
        self.monitors = [Monitor(backend), Monitor(aligned.backend) if aligned is not None else None]
        self.metrics = Metrics()
        self.prompts = {name: load_prompt(name) for name in builtin_prompt_names()}
        self.prompts.update({p.name: p for p in map(load_prompt, config.prompt_files)})
        self.prompts[assistant.prompt.name] = assistant.prompt
        self.analyzers: dict[tuple[str, int], Any] = {}  # the page's pair-mode shift analyses, by top-k (workbench)
        self.token_texts: dict[int, str] = {}  # the base model's token texts, shared by every shift (at most its vocabulary)

    def prompt_set(self, name: str | None, inline: InlinePromptSet | None = None) -> PromptSet | None:
        """The prompt set a request names (None: the server's own; 'none': no URIAL prefix, returned as None),
        or the one it gives inline."""
        if inline is not None:
            if name is not None:
                raise BadRequest("give prompt (a name) or prompt_set (inline), not both", param="prompt_set")
            examples = tuple(Example(query=e.query, answer=e.answer) for e in inline.examples)
            return PromptSet(name=inline.name, system=inline.system, examples=examples, source="request")
        if name is None:
            default = self.assistant.prompt
            return self.prompt_set(default.source, None) if (default.source or "").startswith("pool:") else default
        if name == "none":
            return None
        if name.startswith("pool:"):  # kept examples: read again for every request, so a change is used at once
            try:
                return load_prompt(name)
            except UntunedError as exc:
                raise BadRequest(f"prompt: {exc}", param="prompt") from None
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts))
            raise BadRequest(f"prompt: unknown prompt set {name!r}; this server has {known} (or 'none')", param="prompt")
        return self.prompts[name]

    async def chosen_prompt(self, name: str | None, inline=None) -> PromptSet | None:
        """:meth:`prompt_set`, a pool's cut to the examples that fit the window (tokenizing it: on the prep threads)."""
        chosen = self.prompt_set(name, inline)
        if chosen is not None and (chosen.source or "").startswith("pool:"):
            return await self.off_loop(self.assistant.fitted, chosen)
        return chosen

    async def health(self) -> Health:
        """The load and the engine's state, from what the supervisor and the monitor keep: no worker thread, and at
        most a quarter of a second's wait for a reading newer than the call."""
        processes = [supervised_status(self.assistant.backend)]
        processes.append(supervised_status(self.aligned.backend) if self.aligned is not None else None)
        reading = await self.monitors[0].fresh()
        status, problem, load = "ok", None, reading.load
        age = time.monotonic() - reading.at
        down = next((p for p in processes if p is not None and p.state != "running"), None)
        if down is not None:
            status = "failed" if down.state in ("failed", "closed") else "restarting"
            problem = f"the engine's process is {down.state} (restarts: {down.restarts}; last ended: {down.last_exit})"
        elif reading.problem is not None or age > 10:
            status, problem = "unresponsive", reading.problem or f"the engine has not reported for {age:.0f} s"
        elif load is not None and load.seconds_without_progress > self.config.stall_seconds:
            status = "stalled"
            problem = (
                f"the engine has {load.busy_slots} requests running and {load.waiting} waiting, and has made no "
                f"progress for {load.seconds_without_progress:.0f} s"
            )
        main, aligned = (EngineProcessOut(**dataclasses.asdict(p)) if p is not None else None for p in processes)
        gate = self.gate
        return Health(
            status=status,  # type: ignore[arg-type]
            problem=problem,
            model=self.model,
            prompt=self.assistant.prompt.name,
            parallel=self.parallel,
            active=gate.active,
            waiting=gate.waiting,
            engine=load,
            engine_process=main,
            aligned_process=aligned,
            crash_guard=CrashGuardOut(**self.crashes.summary()),  # type: ignore[arg-type]
            checked_seconds_ago=round(age, 3),
        )

    async def off_loop(self, work: Callable, *args, **kwargs):
        """``work`` (tokenizing, compiling a schema: time that grows with the input) on the prep threads, after
        waiting its turn at the prep gate (503 when too many wait, 504 past the request's time limit)."""
        await self.prep.enter(self.config.request_timeout)
        started = time.perf_counter()
        try:
            call = lambda: work(*args, **kwargs)  # noqa: E731
            return await asyncio.get_running_loop().run_in_executor(self._prep_threads, call)
        finally:
            self.prep.leave(time.perf_counter() - started)

    def check_token_ids(self, ids: list[int] | None, field: str) -> None:
        """Token ids within the model's vocabulary, checked before the request reaches the engine (llama.cpp
        aborts the whole process on an id past its vocabulary)."""
        backend = self.assistant.backend
        vocab = backend.vocab_size if isinstance(backend, TokenPieces) else None
        wrong = next(((i, t) for i, t in enumerate(ids or []) if vocab is not None and t >= vocab), None)
        if wrong is not None:
            raise BadRequest(
                f"{field}: token id {wrong[1]} at position {wrong[0]} is outside the model's vocabulary (0-{vocab - 1})",
                param=field,
            )

    def check_choices(self, n: int, prompts: int = 1) -> None:
        """``n`` choices of each of ``prompts`` prompts are that many requests on the gate: more than it ever
        admits at once is a 400 that says so."""
        room = self.parallel + self.config.max_waiting
        if n * prompts > room:
            what = f"{n} choices" if prompts == 1 else f"{prompts} prompts x n {n} = {n * prompts} choices"
            raise BadRequest(
                f"n: {what} are more than this server ever admits at once ({self.parallel} answered at once + "
                f"{self.config.max_waiting} waiting = {room}); ask for at most {room}",
                param="n" if prompts == 1 else "prompt",
            )

    async def check_fits(self, backend: Backend, rendered: RenderedPrompt, asked: int | None) -> None:
        """A request whose prompt and explicit max_tokens overrun the model's window (the KV pool's, under a
        budget) can never be answered in full: a 400 with the numbers, before it waits for the model."""
        window = backend.context_length
        if asked is None or window is None:
            return
        if self.config.max_tokens_limit is not None:
            asked = min(asked, self.config.max_tokens_limit)

        prompt = len(await self.off_loop(prompt_ids, backend, rendered))
        if prompt + asked > window:
            raise BadRequest(
                f"the prompt is {prompt} tokens and max_tokens {asked}: {prompt + asked} in all, over this model's "
                f"context window of {window} tokens by {prompt + asked - window}; lower max_tokens or shorten the prompt",
                param="max_tokens",
                code="context_length_exceeded",
            )

    async def sampling_for(self, body: Body, default_max: int, *, logprobs: int) -> Sampling:
        """The request's sampling over the server's defaults; a JSON format's grammar is made and compiled by the
        backend here, on a worker thread (a schema it cannot hold is a 400 before the request waits for the model)."""
        self.check_choices(body.n, len(getattr(body, "prompts", [None])))
        wanted = getattr(body, "max_completion_tokens", None) or body.max_tokens or default_max
        if self.config.max_tokens_limit is not None:
            wanted = min(wanted, self.config.max_tokens_limit)
        update: dict[str, object] = {"max_tokens": wanted, "stop": tuple(body.stops), "logprobs": logprobs}
        if getattr(body, "ignore_eos", False):
            update["ignore_eos"] = True
        if body.logit_bias:
            self.check_token_ids([token for token, _ in body.bias], "logit_bias")
            update["logit_bias"] = body.bias
        for name in ("temperature", "top_p", "seed", "repetition_penalty"):
            if getattr(body, name, None) is not None:
                update[name] = getattr(body, name)
        schema = body.response_format.schema_text if body.response_format else None
        if schema is not None:
            kind = body.response_format.type  # type: ignore[union-attr]
            await self.off_loop(self.check_constraint, f"response_format {kind}", "response_format", json_schema=schema)
            update["json_schema"] = schema
        return self.assistant.sampling.model_copy(update=update)

    def check_constraint(self, what: str, param: str, *, json_schema: str | None = None, grammar: str | None = None) -> None:
        """A JSON schema or grammar compiled by the backend (in the engine's process, on a worker thread of the
        caller's): one it cannot enforce, or that no output can match, is a 400 before the request waits."""
        backend = self.assistant.backend
        if not isinstance(backend, SchemaConstrained):
            raise BadRequest(f"{what} needs a backend that constrains its output (llama.cpp); {backend.name} cannot", param=param)
        try:
            backend.check_constraint(json_schema=json_schema, grammar=grammar)
        except (ConstraintError, ValueError) as exc:
            raise BadRequest(f"{param}: {exc}", param=param) from None

    @staticmethod
    def seeded(sampling: Sampling, n: int) -> list[Sampling]:
        """One sampling per choice: seed, seed + 1, ... when a seed is given, else each its own random one."""
        if n == 1:
            return [sampling]
        return [
            sampling.model_copy(update={"seed": (sampling.seed + i) % 2**31 if sampling.seed is not None else None})
            for i in range(n)
        ]

    @staticmethod
    def total_usage(completions: list[Completion | None]) -> Usage:
        """The prompt counted once (one prompt), every choice's tokens added."""
        first = usage(completions[0])
        produced = sum(c.completion_tokens for c in completions if c is not None)
        return Usage(prompt_tokens=first.prompt_tokens, completion_tokens=produced, total_tokens=first.prompt_tokens + produced)

    async def on_model(self, work: Callable, *args, **kwargs):
        """``work`` run on a worker thread while holding a slot of the gate, as a completion does (scoring
        takes the model too); its time counts toward the gate's Retry-After estimate. The slot is given back
        when the work has really ended: a client that leaves meanwhile stops waiting for it, but the next
        request is not let onto a model that is still busy with it."""
        await self.gate.enter(self.config.request_timeout)
        started = time.perf_counter()
        try:
            future = asyncio.ensure_future(asyncio.to_thread(work, *args, **kwargs))
        except BaseException:
            self.gate.leave(time.perf_counter() - started)
            raise

        def ended(done: asyncio.Future) -> None:
            self.gate.leave(time.perf_counter() - started)
            if not done.cancelled():
                done.exception()  # read, so that a failure nobody waits for any more is not reported as lost

        future.add_done_callback(ended)
        return await asyncio.shield(future)

    async def _first_event(self, job: Job, events: AsyncIterator, started: float, endpoint: str) -> tuple[str, object]:
        try:
            kind, value = await anext(events)
        except BaseException:
            job.stop()
            raise
        if kind == "error":
            raise_for(value)
        self.metrics.first_token(endpoint, time.perf_counter() - started)
        return kind, value

    async def run(self, body: Body, begin: Callable[[], Completion], *, chat: bool):
        """The job's stream, or its whole answer: ``(response, None)`` when streaming, else ``(None, (text, completion))``.
        A request the crash-loop guard refuses never reaches the model; one whose engine crashed under it before
        anything was sent is run again where the guard allows (one such retry at a time)."""
        caller = current_caller.get()
        self.crashes.check(caller)
        for attempt in range(3):
            try:
                if not attempt:
                    return await self._run_once(body, begin, chat=chat)
                async with self.crashes.retry_lock:
                    return await self._run_once(body, begin, chat=chat)
            except EngineRestarted as exc:
                if not getattr(exc, "retry", False):
                    raise
                self.crashes.retried += 1
        raise EngineRestarted("the engine restarted three times while this request ran; retry it later")

    def _on_crash(self, job: Job, error: EngineRestarted, caller) -> None:
        """On the event loop, before the job's error event is read: the guard's verdict, kept on the error."""
        error.retry = self.crashes.after_crash(caller, error, sent=job.delivered)  # type: ignore[attr-defined]

    async def _run_once(self, body: Body, begin: Callable[[], Completion], *, chat: bool):
        started = time.perf_counter()
        deadline = time.monotonic() + self.config.request_timeout
        await self.gate.enter(self.config.request_timeout)
        caller = current_caller.get()
        job = Job(begin, self.gate, on_crash=lambda job, error: self._on_crash(job, error, caller))
        events = job.events(deadline)
        kind, value = await self._first_event(job, events, started, "chat" if chat else "completions")
        if body.stream:
            job.delivered = True
            ident, created = new_id("chatcmpl" if chat else "cmpl"), now()
            return JobStream(job, sse(job, events, (kind, value), ident, created, self.model, chat, body)), None
        parts = [value] if kind == "text" else []
        try:
            while kind == "text":
                kind, value = await anext(events)
                if kind == "text":
                    parts.append(value)
                elif kind == "error":
                    raise_for(value)
        finally:
            job.stop()
        return None, ("".join(parts), job.completion)

    async def choices(self, body: Body, begin: Callable[[Sampling], Completion], samplings: list[Sampling], *, chat: bool):
        """Every choice's (text, completion), the jobs run side by side; the first error ends them all."""
        tasks = [asyncio.ensure_future(self.run(body, lambda s=s: begin(s), chat=chat)) for s in samplings]
        try:
            return [whole for _, whole in await asyncio.gather(*tasks)]
        except BaseException:
            for task in tasks:  # each stops its job on the way out
                task.cancel()
            raise


def serving(request: Request) -> Serving:
    """The app's :class:`Serving` (a FastAPI dependency)."""
    return request.app.state.serving
