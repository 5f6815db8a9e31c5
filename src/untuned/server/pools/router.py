"""The pools of kept examples over HTTP, for the chat page's Keep, Edit and pool panel: the server writes them
(the user's ``pool.sqlite``, :mod:`untuned.pool`), so they outlive the browser; ``prompt: "pool:NAME"`` serves a
pool, read again for every request. Each call runs on a worker thread (a write may wait for another process's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from untuned.pool import KeptExample, Pool, PoolError
from untuned.server.errors import BadRequest
from untuned.server.wire import ERRORS, ErrorResponse

router = APIRouter(prefix="/v1/untuned/pools", tags=["untuned"])
TEXT = 100_000  # characters a kept query or answer may have
Name = Annotated[str, Path(pattern=r"^[\w.@+-]{1,128}$", description="A pool's name.")]
ExampleId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A kept example's id.")]
KEEP_ERRORS = {**ERRORS, 409: {"model": ErrorResponse, "description": "The pool holds this example already"}}


class KeepRequest(BaseModel):
    """An answer to keep: the query, the answer as kept (edited or not), the model's own answer if it was edited."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=TEXT)
    answer: str = Field(max_length=TEXT)
    original: str | None = Field(None, max_length=TEXT, description="The model's answer before an edit.")
    model: str | None = Field(None, max_length=500)
    prompt_set: str | None = Field(None, max_length=500, description="The prompt set the answer was made with.")


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(None, max_length=TEXT)
    answer: str | None = Field(None, max_length=TEXT)


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        max_length=100_000, description="Every example of the pool, each once, in the new order."
    )


class KeptOut(BaseModel):
    id: int
    pool: str
    query: str
    answer: str
    original: str | None
    model: str | None
    prompt_set: str | None
    created: float
    position: int


class PoolOut(BaseModel):
    name: str
    examples: int


async def _pool(work):
    """``work(pool)`` on a worker thread with its own connection; a refusal is a 400 (409 for a duplicate)."""

    def run():
        pool = Pool()
        try:
            return work(pool)
        finally:
            pool.close()

    try:
        return await run_in_threadpool(run)
    except PoolError as exc:
        duplicate = "holds this example already" in str(exc)
        raise BadRequest(str(exc), code="duplicate" if duplicate else "pool", status=409 if duplicate else 400) from None


def _out(kept: KeptExample) -> KeptOut:
    return KeptOut(**kept.__dict__)


def _in(pool: Pool, name: str, example_id: int) -> int:
    """``example_id``, checked to be in the pool ``name`` (the URL's), else PoolError."""
    kept = pool.get(example_id)
    if kept.pool != name:
        raise PoolError(f"example {example_id} is in the pool {kept.pool!r}, not {name!r}")
    return example_id


@router.get("", response_model=list[PoolOut], responses=ERRORS)
async def pools() -> list[PoolOut]:
    """The pools and how many examples each holds."""
    return [PoolOut(name=name, examples=count) for name, count in await _pool(lambda p: p.pools())]


@router.get("/{name}", response_model=list[KeptOut], responses=ERRORS)
async def examples(name: Name) -> list[KeptOut]:
    """A pool's examples in its order (what ``prompt: "pool:NAME"`` serves, first to last)."""
    return [_out(k) for k in await _pool(lambda p: p.examples(name))]


@router.post("/{name}", response_model=KeptOut, status_code=201, responses=KEEP_ERRORS)
async def keep(name: Name, body: KeepRequest) -> KeptOut:
    """Keep an example first in the pool ``name`` (made if new); an empty text or a duplicate is refused."""
    return _out(
        await _pool(
            lambda p: p.keep(name, body.query, body.answer, original=body.original, model=body.model, prompt_set=body.prompt_set)
        )
    )


@router.patch("/{name}/{example_id}", response_model=KeptOut, responses=KEEP_ERRORS)
async def edit(name: Name, example_id: ExampleId, body: EditRequest) -> KeptOut:
    return _out(await _pool(lambda p: p.edit(_in(p, name, example_id), query=body.query, answer=body.answer)))


@router.put("/{name}/order", response_model=list[KeptOut], responses=ERRORS)
async def order(name: Name, body: OrderRequest) -> list[KeptOut]:
    def work(pool: Pool):
        pool.reorder(name, body.ids)
        return pool.examples(name)

    return [_out(k) for k in await _pool(work)]


@router.delete("/{name}/{example_id}", response_model=KeptOut, responses=ERRORS)
async def remove(name: Name, example_id: ExampleId) -> KeptOut:
    return _out(await _pool(lambda p: p.remove(_in(p, name, example_id))))
