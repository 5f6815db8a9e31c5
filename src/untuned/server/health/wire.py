"""The records of ``GET /health`` (and what ``/metrics`` reads): the load, the engine's process, the
crash-loop guard."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EngineLoad(BaseModel):
    """What the model's batching engine reports (local backends)."""

    slots: int
    busy_slots: int
    waiting: int
    requests: int
    generated_tokens: int
    prompt_tokens: int
    prefix_hits: int
    prefix_misses: int
    prefix_loads: int = Field(0, description="Of the misses: prefixes loaded from the disk cache instead of evaluated.")
    largest_batch: int
    draft_proposed: int = Field(0, description="Speculative decoding (--draft): tokens guessed.")
    draft_accepted: int = Field(0, description="Of the guesses, the ones the model confirmed.")
    seconds_without_progress: float = Field(
        description="While it has work: seconds since it last evaluated a prompt chunk or made a token (0 when idle)."
    )


class EngineProcessOut(BaseModel):
    """The process the model runs in (``untuned serve`` supervises it and restarts it when it dies)."""

    state: Literal["starting", "running", "restarting", "failed", "closed"]
    restarts: int = Field(description="Times the engine's process ended and was started again.")
    pid: int | None
    last_exit: str | None = Field(description="How its process last ended ('signal SIGABRT'), None if it never has.")
    crashes: dict[str, int] = Field(
        default_factory=dict, description="Times its process ended, by how ('signal SIGABRT', 'exit code 1')."
    )


class CrashGuardOut(BaseModel):
    """The crash-loop guard: a request that ended the engine is refused, as is a client whose requests keep ending it."""

    crashes: dict[str, int] = Field(description="Engine crashes seen by the server, by how its process ended.")
    blocked_requests: int = Field(description="Request bodies refused because they ended the engine.")
    blocked_clients: int = Field(description="Clients refused (429) for ending the engine too often.")
    refused: int = Field(description="Requests refused by the guard.")
    retried: int = Field(description="Requests retried transparently after a crash they were not to blame for.")


HealthStatus = Literal["ok", "stalled", "restarting", "failed", "unresponsive"]


class Health(BaseModel):
    """200 when ``status`` is ok; 503 with this body otherwise (``problem`` says what is wrong)."""

    status: HealthStatus = "ok"
    problem: str | None = Field(None, description="What is wrong, in words, when status is not ok.")
    model: str
    prompt: str
    parallel: int = Field(description="Requests answered at once.")
    active: int = Field(description="Requests being answered now.")
    waiting: int = Field(description="Requests waiting for a slot.")
    engine: EngineLoad | None = None
    engine_process: EngineProcessOut | None = Field(None, description="The model's process, when it runs in one of its own.")
    aligned_process: EngineProcessOut | None = Field(None, description="The --aligned model's process, likewise.")
    crash_guard: CrashGuardOut = Field(description="Requests refused for ending the engine (docs/faults.md).")
    checked_seconds_ago: float = Field(0.0, description="Age of the engine's figures (kept by a monitor thread).")
