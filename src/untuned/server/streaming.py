"""Answers streamed as server-sent events, in the OpenAI chunk shapes; a response that ends however
it ends (the client gone included) stops its job."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from untuned.assistant import Completion
from untuned.errors import ContextOverflowError, EngineRestarted, EngineUnavailable, ModelFailure, UntunedError
from untuned.server.chat.wire import chat_chunk
from untuned.server.completions.wire import text_chunk
from untuned.server.errors import BadRequest, RequestTimeout
from untuned.server.logprobs import chat_logprobs, completion_logprobs
from untuned.server.wire import Usage, error_json
from untuned.server.worker import Job

log = logging.getLogger(__name__)


def usage(completion: Completion | None) -> Usage:
    prompt_tokens = (completion.prompt_tokens if completion else None) or 0
    produced = completion.completion_tokens if completion else 0
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=produced, total_tokens=prompt_tokens + produced)


def raise_for(error: object) -> None:
    """Raise what a job's error means for the client: 400 for what it sent, the server's own failures as they are."""
    if isinstance(error, (ModelFailure, EngineRestarted, EngineUnavailable)):
        raise error
    if isinstance(error, ContextOverflowError):
        raise BadRequest(str(error), param="messages", code="context_length_exceeded")
    if isinstance(error, (UntunedError, ValueError)):
        raise BadRequest(str(error))
    raise error  # type: ignore[misc]


class JobStream(StreamingResponse):
    """A streaming response that stops its job however the response ends (client gone included)."""

    def __init__(self, job: Job, content: AsyncIterator[str]) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.stop()


def stream_error(exc: Exception) -> dict:
    """The error event of a stream that has begun: the client's fault, a timeout, or the server's side, named."""
    if isinstance(exc, (BadRequest, RequestTimeout)):
        return error_json(str(exc), kind="timeout" if isinstance(exc, RequestTimeout) else "invalid_request_error")
    if isinstance(exc, (ModelFailure, EngineRestarted, EngineUnavailable)):
        code = {ModelFailure: "model_failure", EngineRestarted: "engine_restarted"}.get(type(exc), "engine_unavailable")
        return error_json(str(exc), kind="server_error", code=code)
    log.error("streaming failed", exc_info=exc)
    return error_json(f"internal error: {exc}", kind="server_error")


async def sse(
    job: Job, events: AsyncIterator, first: tuple[str, object], ident: str, created: int, model: str, chat: bool, body
) -> AsyncIterator[str]:
    """The events of ``job`` as SSE lines; with logprobs, each chunk carries its new tokens' log-probabilities."""
    top = (body.top_logprobs or 0) if chat else (body.logprobs or 0)
    wanted = body.logprobs if chat else body.logprobs is not None
    sent = 0

    def data(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def new_logprobs() -> dict | None:
        nonlocal sent
        completion = job.completion
        if not wanted or completion is None:
            return None
        entries, sent = completion.logprobs[sent:], len(completion.logprobs)
        if chat:
            return chat_logprobs(entries, top).model_dump()
        as_ids = body.return_tokens_as_token_ids
        return completion_logprobs(None, None, entries, top, as_ids=as_ids).model_dump()  # type: ignore[arg-type]

    def chunk(text: str | None, finish: str | None) -> dict:
        if chat:
            payload = chat_chunk(ident, created, model, {} if text is None else {"content": text}, finish)
        else:
            payload = text_chunk(ident, created, model, text or "", finish)
        payload["choices"][0]["logprobs"] = new_logprobs()
        return payload

    try:
        if chat:
            yield data(chat_chunk(ident, created, model, {"role": "assistant", "content": ""}, None))
        kind, value = first
        while kind == "text":
            yield data(chunk(str(value), None))
            kind, value = await anext(events)
        if kind == "error":
            raise_for(value)
        completion = job.completion
        yield data(chunk(None, completion.finish_reason if completion else "stop"))
        if body.stream_options and body.stream_options.include_usage and completion is not None:
            yield data(
                {
                    "id": ident,
                    "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage(completion).model_dump(),
                }
            )
    except Exception as exc:  # the headers are sent: report in the stream
        yield data(stream_error(exc))
    finally:
        job.stop()
    yield "data: [DONE]\n\n"
