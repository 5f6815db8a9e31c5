"""What a run of one model is: the model, how it is loaded and how it samples, stated once."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from untuned.backends import LoadOptions, Sampling


class RunPlan(BaseModel):
    """A model, its load options and its sampling: what ``untuned generate``'s options and an experiment's
    ``[[models]]`` entry both become. ``temperature_given``: the sampling's temperature was chosen, so a
    benchmark's own temperatures (MT-bench's per category) do not replace it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "default"
    loading: LoadOptions = Field(default_factory=LoadOptions)
    sampling: Sampling = Field(default_factory=Sampling)
    temperature_given: bool = False
    chat_template: bool = Field(False, description="Answer in the model's own chat template instead of URIAL.")
    fast_batching: bool = Field(False, description="llama.cpp: more than 7 requests per step (not batch-invariant).")
