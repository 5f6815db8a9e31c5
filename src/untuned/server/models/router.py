"""``GET /v1/models``: the model served (and the --aligned one), with its prompt set and window."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from untuned.server.models.wire import ModelCard, ModelList
from untuned.server.serving import Serving, serving
from untuned.server.wire import ERRORS, now

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def models(serve: Serving = Depends(serving)) -> ModelList:
    backend = serve.assistant.backend
    cards = [ModelCard(id=serve.model, created=now(), prompt=serve.assistant.prompt.name, context_length=backend.context_length)]
    if serve.aligned is not None:  # the aligned model answers in its own chat template: no prompt set
        aligned = serve.aligned.backend
        cards.append(ModelCard(id=serve.aligned_name, created=now(), prompt=None, context_length=aligned.context_length))
    return ModelList(data=cards)
