"""Generation runs (``untuned generate``): answer every item of a benchmark set with URIAL into an
append-only, resumable JSONL file of :class:`GenerationRecord` (see :mod:`untuned.runner` for
what resuming guarantees), and merge the shard files of one run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from untuned.assistant import Assistant
from untuned.backends import Backend, BatchInvariance, ChatTemplated, LoadOptions, Sampling
from untuned.errors import DataFileError, RunSettingsMismatch, UntunedError
from untuned.jsonl import JsonlFile
from untuned.rows import Rows
from untuned.runner import ResumableRun, RunSummary

if TYPE_CHECKING:
    from untuned.benchmarks import Item

log = logging.getLogger(__name__)


class GenerationSettings(BaseModel):
    """What must match for records to belong to the same run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: str
    model: str
    prompt_name: str
    prompt_hash: str
    sampling: dict[str, Any]
    loading: dict[str, Any] = Field(
        default_factory=dict, description="How the model was loaded, where it changes the numbers: GPU layers, weights' dtype."
    )
    temperature_by_category: dict[str, float] = Field(
        default_factory=dict, description="Temperatures that replace the sampling's for items of these categories (MT-bench's)."
    )

    @field_validator("sampling")
    @classmethod
    def _every_field(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The sampling with every field of today's Sampling: a run recorded before a field existed still
        matches one made now with that field at its default (its resume is not refused)."""
        try:
            return Sampling.model_validate(value).model_dump(mode="json")
        except ValueError:
            return value


class GenerationRecord(GenerationSettings):
    """One answered item: its turns, the model's answers, and the settings that made them."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    id: str
    dataset: str | None = None
    turns: list[str]
    outputs: list[str]
    prompt_tokens: list[int | None]
    completion_tokens: list[int]
    finish_reasons: list[str]
    seconds: float
    meta: dict[str, Any] = {}

    @property
    def instruction(self) -> str:
        return self.turns[0]

    @property
    def output(self) -> str:
        """The answer to the first turn (what single-turn benchmarks judge)."""
        return self.outputs[0]

    def settings(self) -> GenerationSettings:
        return GenerationSettings(**self.model_dump(include=set(GenerationSettings.model_fields)))


class GenerationFile(JsonlFile[GenerationRecord]):
    """An append-only JSONL file of :class:`GenerationRecord`."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, GenerationRecord, label="generation record")


CHAT_TEMPLATE = "chat-template"  # the prompt name of answers given in the model's own chat template


def choose_batching(backend: Backend, *, fast: bool = False) -> None:
    """A batch run's answers are held batch-invariant, unless ``fast`` (faster; a greedy answer may then
    differ with the concurrency); a backend that cannot choose refuses ``fast``."""
    if isinstance(backend, BatchInvariance):
        backend.batch_invariant = not fast
    elif fast:
        raise UntunedError(f"--fast-batching is a llama.cpp setting; {backend.name} has no batching to choose")


def batching(backend: Backend) -> str:
    """How the run's answers depend on what is decoded beside them: "invariant" (never), "fast" (a greedy
    answer may differ with the batch) or "uncontrolled" (a backend that cannot say, such as a server)."""
    if isinstance(backend, BatchInvariance):
        return "invariant" if backend.batch_invariant else "fast"
    return "uncontrolled"


def recorded_loading(backend: Backend, loading: LoadOptions) -> dict[str, Any]:
    """The load settings that change a run's numbers. Under a KV budget the requests share one pool of cells
    and a greedy answer may differ with what shares it: batching is then "pooled", whatever was asked."""
    recorded: dict[str, Any] = {
        "gpu_layers": getattr(backend, "gpu_layers", loading.gpu_layers),  # auto: as it was resolved
        "dtype": loading.dtype,
        "batching": batching(backend),
    }
    if loading.kv_type != "f16" or loading.flash_attn != "auto":
        recorded.update(kv_type=loading.kv_type, flash_attn=loading.flash_attn)
    if loading.kv_budget is not None:
        recorded.update(batching="pooled", kv_budget=loading.kv_budget)
    return recorded


def generation_settings(
    assistant: Assistant,
    model_spec: str,
    loading: LoadOptions | None = None,
    *,
    chat_template: bool = False,
    temperature_by_category: dict[str, float] | None = None,
) -> GenerationSettings:
    """What a run is. ``chat_template``: answered in the model's own chat template instead of URIAL;
    ``temperature_by_category``: per-category temperatures (a benchmark's, MT-bench's) over the sampling's."""
    if chat_template:
        template = assistant.backend.template_text() if isinstance(assistant.backend, ChatTemplated) else None
        if template is None:
            raise UntunedError(f"{assistant.backend.name} has no chat template to answer in (is it a base model?)")
        prompt_name, prompt_hash = CHAT_TEMPLATE, hashlib.sha256(template.encode("utf-8")).hexdigest()
    else:
        prompt_name, prompt_hash = assistant.prompt.name, assistant.prompt.content_hash
    return GenerationSettings(
        generator=f"untuned/{assistant.backend.name}/{prompt_name}",
        model=model_spec,
        prompt_name=prompt_name,
        prompt_hash=prompt_hash,
        sampling=assistant.sampling.model_dump(mode="json"),
        loading=recorded_loading(assistant.backend, loading) if loading else {},
        temperature_by_category=temperature_by_category or {},
    )


def answer_item(assistant: Assistant, item: Item, settings: GenerationSettings) -> GenerationRecord:
    """Answer every turn of ``item``; later turns see the model's own earlier answers (with URIAL, or in
    the model's own chat template when the settings say so)."""
    chat = assistant.chat()
    messages: list[dict[str, str]] = []
    temperature = settings.temperature_by_category.get(str(item.meta.get("category")))
    sampling = None if temperature is None else assistant.sampling.model_copy(update={"temperature": temperature})
    started = time.perf_counter()
    outputs, prompt_tokens, completion_tokens, finishes = [], [], [], []
    for turn in item.turns:
        if settings.prompt_name == CHAT_TEMPLATE:
            messages.append({"role": "user", "content": turn})
            completion = assistant.complete_chat(messages, sampling=sampling)
            messages.append({"role": "assistant", "content": completion.text})
        else:
            completion = chat.send(turn, sampling=sampling)
        outputs.append(completion.text)
        prompt_tokens.append(completion.prompt_tokens)
        completion_tokens.append(completion.completion_tokens)
        finishes.append(completion.finish_reason or "length")
    return GenerationRecord(
        id=item.id,
        dataset=item.dataset,
        turns=list(item.turns),
        outputs=outputs,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reasons=finishes,
        seconds=time.perf_counter() - started,
        meta=item.meta,
        **settings.model_dump(),
    )


def generate(
    assistant: Assistant,
    items: Iterable[Item],
    path: str | Path,
    *,
    settings: GenerationSettings,
    force: bool = False,
    concurrency: int = 1,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[GenerationRecord], None] | None = None,
) -> RunSummary[GenerationRecord]:
    """Answer the items not yet in ``path``, appending one record each as soon as it is done.

    With ``concurrency`` > 1 items are answered side by side: a local model with parallel slots
    decodes them in one batch, a remote one gets that many requests at once.
    """
    run = ResumableRun(GenerationFile(path), settings=settings, settings_of=GenerationRecord.settings)
    return run.run(
        list(items),
        lambda batch: [answer_item(assistant, item, settings) for item in batch],
        force=force,
        concurrency=concurrency,
        tally=lambda record: {"tokens": sum(record.completion_tokens)},
        on_start=on_start,
        on_record=on_record,
    )


def merge(paths: Iterable[str | Path], out: str | Path) -> int:
    """Merge shard files into ``out`` (ids once each, same settings required); return the record count."""
    seen: dict[str, GenerationRecord] = {}
    settings: GenerationSettings | None = None
    for path in paths:
        for record in GenerationFile(path).read():
            if settings is None:
                settings = record.settings()
            elif record.settings() != settings:
                raise RunSettingsMismatch(f"{path} was made with other settings than the files before it; not merging.")
            seen.setdefault(record.id, record)
    target = GenerationFile(out)
    if target.path.exists():
        raise UntunedError(f"{out} exists; merge writes a new file.")
    target.append(*seen.values())
    return len(seen)


def generation_records(path: str | Path, rows: Rows, *, what: str = "a generation record") -> list[GenerationRecord]:
    """The records of an ``untuned generate`` run from its rows; a row that is not one is named as not ``what``."""
    records = []
    for number, row in rows:
        try:
            records.append(GenerationRecord.model_validate(row))
        except ValueError as exc:
            raise DataFileError(path, number, f"not {what}: {str(exc).splitlines()[0]}") from exc
    return records
