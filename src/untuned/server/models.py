"""``GET /v1/models``, ``POST /tokenize`` and ``POST /detokenize`` (vLLM's and llama.cpp's shapes)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from untuned.server.completions import checked_ids
from untuned.server.responses import now
from untuned.server.schema import (
    ERRORS,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from untuned.server.serving import Serving, serving

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def models(serve: Serving = Depends(serving)) -> ModelList:
    backend = serve.assistant.backend
    cards = [ModelCard(id=serve.model, created=now(), prompt=serve.assistant.prompt.name, context_length=backend.context_length)]
    if serve.aligned is not None:  # the aligned model answers in its own chat template: no prompt set
        aligned = serve.aligned.backend
        cards.append(ModelCard(id=serve.aligned_name, created=now(), prompt=None, context_length=aligned.context_length))
    return ModelList(data=cards)


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
async def tokenize(body: TokenizeRequest, serve: Serving = Depends(serving)) -> TokenizeResponse:
    backend = serve.assistant.backend
    ids = await asyncio.to_thread(backend.tokenize, body.text, add_special=body.special)
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=backend.context_length)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
async def detokenize(body: DetokenizeRequest, serve: Serving = Depends(serving)) -> DetokenizeResponse:
    checked_ids(serve, body.tokens, "tokens")
    text = await asyncio.to_thread(serve.assistant.backend.detokenize, body.tokens)
    return DetokenizeResponse(prompt=text, content=text)
