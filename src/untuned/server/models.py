"""``GET /v1/models``, ``POST /tokenize`` and ``POST /detokenize`` (vLLM's and llama.cpp's shapes)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

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


# The ids /tokenize gives are what /detokenize and /v1/completions take: OpenAPI links say so, and an API
# fuzzer's stateful phase follows them (tokenize, then feed the ids back), reaching the engine with real ids.
TOKENIZE_LINKS = {
    "Detokenize": {"operationId": "detokenize", "requestBody": {"tokens": "$response.body#/tokens"}},
    "CompleteTheIds": {"operationId": "completions", "requestBody": {"prompt": "$response.body#/tokens"}},
}


@router.post(
    "/tokenize",
    response_model=TokenizeResponse,
    operation_id="tokenize",
    responses={**ERRORS, 200: {"links": TOKENIZE_LINKS}},
)
async def tokenize(body: TokenizeRequest, serve: Serving = Depends(serving)) -> TokenizeResponse:
    backend = serve.assistant.backend
    ids = await asyncio.to_thread(backend.tokenize, body.text, add_special=body.special)
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=backend.context_length)


@router.post("/detokenize", response_model=DetokenizeResponse, operation_id="detokenize", responses=ERRORS)
async def detokenize(body: DetokenizeRequest, serve: Serving = Depends(serving)) -> DetokenizeResponse:
    serve.check_token_ids(body.tokens, "tokens")
    text = await asyncio.to_thread(serve.assistant.backend.detokenize, body.tokens)
    return DetokenizeResponse(prompt=text, content=text)
