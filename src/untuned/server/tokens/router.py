"""``POST /tokenize`` and ``POST /detokenize``, in vLLM's and llama.cpp's server's shapes."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from untuned.server.serving import Serving, serving
from untuned.server.tokens.wire import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from untuned.server.wire import ERRORS

router = APIRouter()

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
    ids = await serve.off_loop(backend.tokenize, body.text, add_special=body.special)
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=backend.context_length)


@router.post("/detokenize", response_model=DetokenizeResponse, operation_id="detokenize", responses=ERRORS)
async def detokenize(body: DetokenizeRequest, serve: Serving = Depends(serving)) -> DetokenizeResponse:
    serve.check_token_ids(body.tokens, "tokens")
    text = await serve.off_loop(serve.assistant.backend.detokenize, body.tokens)
    return DetokenizeResponse(prompt=text, content=text)
