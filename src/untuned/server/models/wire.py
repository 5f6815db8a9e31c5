"""Wire records of ``GET /v1/models``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "untuned"
    prompt: str | None = Field(
        description="Name of the URIAL prompt set the server aligns with (None: an aligned "
        "model answering in its own chat template)."
    )
    context_length: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
