"""An experiment's plan: its TOML records (models, datasets, judge), read with every error named by key and
line, and the grid of cells it declares."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from untuned.backends import LoadOptions, Sampling
from untuned.benchmarks import Item, benchmark, benchmark_names
from untuned.data import select
from untuned.errors import InvalidInput, UntunedError
from untuned.judge.modes import judge_mode, mode_names
from untuned.pipeline import RunPlan
from untuned.prompt import PromptSet, load_prompt

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef]

_K = re.compile(r"^(?P<name>.+?):k=(?P<ks>\d+(?:,\d+)*)$")


def _tuples(value):
    """TOML's arrays as the records' tuples (a plan is validated strictly: a "48" is not a number)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class ModelPlan(BaseModel):
    """A model of the grid: its spec, its load options and its sampling, becoming one
    :class:`~untuned.pipeline.RunPlan`. The load and sampling settings are the library's own records,
    :class:`LoadOptions` and :class:`Sampling` (their types, defaults, bounds and descriptions: ``generate`` reads
    the same ones), written in the model's table (``n_ctx = 4096``, ``max_tokens = 256``) or in its ``load`` and
    ``sampling`` tables. ``concurrency`` is the run's, as ``generate --concurrency``: items answered at once, a
    local model's parallel slots with it (a remote backend's own cap on requests in flight stays LoadOptions')."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[\w.-]+$")
    model: str = "default"
    load: LoadOptions = Field(default_factory=LoadOptions)
    sampling: Sampling = Field(default_factory=Sampling)
    concurrency: int = Field(4, ge=1, le=64, description="Items answered at once, as generate --concurrency.")
    chat_template: bool = Field(
        False,
        description="An aligned (instruct) model answering in its own chat template: the plan's prompt sets do not apply to it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _nested(cls, data):
        """A key of LoadOptions or Sampling written in the model's table goes to its record (one key, one place)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)  # the caller's table stays as it was
        load, sampling = dict(data.pop("load", None) or {}), dict(data.pop("sampling", None) or {})
        for key in [k for k in data if k not in cls.model_fields]:
            for record, into in ((LoadOptions, load), (Sampling, sampling)):
                if key in record.model_fields:
                    if key in into:
                        raise InvalidInput(f"{key} is given twice: in the model's table and in its {record.__name__} table")
                    into[key] = data.pop(key)
                    break
        return {**data, "load": _tuples(load), "sampling": _tuples(sampling)}

    @property
    def temperature_given(self) -> bool:
        """The plan chose a temperature, so a benchmark's own (MT-bench's per category) do not replace it."""
        return "temperature" in self.sampling.model_fields_set

    def run_plan(self) -> RunPlan:
        return RunPlan(
            model=self.model,
            loading=self.load.model_copy(update={"parallel": max(self.load.parallel, self.concurrency)}),
            sampling=self.sampling,
            temperature_given=self.temperature_given,
            chat_template=self.chat_template,
        )


class DatasetPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[\w.-]+$")
    dataset: str = Field(
        description="A benchmark's name (untuned.benchmarks): just-eval, mt-bench, alpaca-eval, json, a plugin's."
    )
    data_file: str | None = None
    ids: list[str] | None = None
    tags: list[str] | None = Field(
        None, description="Keep the items with any of these tags (just-eval's task types and topics, MT-bench's category)."
    )
    limit: int | None = Field(None, ge=1)

    @field_validator("dataset")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in benchmark_names():
            raise InvalidInput(f"unknown dataset {value!r}; known: {', '.join(benchmark_names())}")
        return value


class JudgePlan(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str | None = Field(None, description="An OpenAI-compatible judge; none: the bundled local judge.")
    model: str | None = None
    modes: list[str] = Field(default_factory=lambda: ["multi"], description="Judge modes (untuned.judge.modes).")
    concurrency: int = Field(4, ge=1, le=64)
    baseline: str | None = Field(None, description="pairwise: the baseline's answers (any answer file), matched by id.")
    references: str | None = Field(None, description="mt-bench: FastChat's reference answers for math, reasoning, coding.")

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in mode_names()]
        if unknown:
            raise InvalidInput(f"unknown judge mode {unknown[0]!r}; known: {', '.join(mode_names())}")
        return value

    @model_validator(mode="after")
    def _baseline_for_pairwise(self) -> JudgePlan:
        comparing = [m for m in self.modes if judge_mode(m).needs_second]
        if comparing and not self.baseline:
            raise InvalidInput(f"{comparing[0]} judging needs a baseline (an answer file)")
        return self


class LikelihoodPlan(BaseModel):
    """A measure with no judge: the NLL per token of target answers under each cell's model and prompt set."""

    model_config = ConfigDict(extra="forbid", strict=True)
    answers: str = Field(description="Target answers (any answer file untuned reads), matched to the dataset's items by id.")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[\w.-]+$")
    models: list[ModelPlan] = Field(min_length=1)
    prompts: list[str] = Field(min_length=1, description="Prompt sets: names, .urial files, NAME:k=0,1,3.")
    datasets: list[DatasetPlan] = Field(min_length=1)
    judge: JudgePlan | None = None
    shift: bool = Field(False, description="Per cell, how far the URIAL prefix moves the base model (shift context).")
    likelihood: LikelihoodPlan | None = None
    compare: list[tuple[str, str]] | None = Field(
        None,
        description="The paired comparisons the report makes, as MODEL/VARIANT names (gemma/helpful@k0); none: every pair.",
    )

    @field_validator("compare", mode="before")
    @classmethod
    def _pairs(cls, value):
        """TOML writes each pair as a list."""
        return [tuple(pair) if isinstance(pair, list) else pair for pair in value] if isinstance(value, list) else value


class Cell(BaseModel):
    """One model × prompt variant × dataset."""

    id: str
    model: ModelPlan
    prompt: str = Field(description="The variant: a set's name, with @kK when cut to its first K examples.")
    k: int | None
    dataset: DatasetPlan

    @property
    def name(self) -> str:
        """MODEL/VARIANT, the name a plan's ``compare`` uses."""
        return f"{self.model.name}/{self.prompt}"


def read_plan(path: str | Path) -> Plan:
    """The plan in ``path``; an unknown key, a wrong type or a bad value is named with its line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UntunedError(f"{path}: not valid TOML: {exc}") from None
    try:
        plan = Plan.model_validate(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = next((str(p) for p in reversed(first["loc"]) if isinstance(p, str)), "")
        line = next((n for n, row in enumerate(text.splitlines(), 1) if re.match(rf"\s*{re.escape(key)}\s*=", row)), None)
        where = ".".join(str(p) for p in first["loc"])
        at = f" line {line}" if line else ""
        raise UntunedError(f"{path}{at}: {where}: {first['msg']}") from None
    plan = relative_to(plan, path.resolve().parent)
    for variant in plan.prompts:  # every prompt set readable before anything runs
        prompt_variants(variant)
    known = {cell.name for cell, _ in cells(plan)}
    unknown = [name for pair in plan.compare or [] for name in pair if name not in known]
    if unknown:
        names, have = ", ".join(map(repr, unknown)), ", ".join(sorted(known))
        raise UntunedError(f"{path}: compare names {names}: no such MODEL/VARIANT; the plan has {have}")
    return plan


def relative_to(plan: Plan, folder: Path) -> Plan:
    """The plan with its relative paths (data files, a judge's baseline and references, prompt set files, local
    models) read from ``folder``, the plan file's own, wherever the command runs."""

    def here(value: str | None, *, always: bool = True) -> str | None:
        if not value or value.startswith(("http://", "https://", "hf:")) or Path(value).expanduser().is_absolute():
            return value
        found = folder / value
        return str(found) if always or found.exists() else value

    def prompt(spec: str) -> str:
        found = _K.match(spec)
        if found is None:
            return here(spec, always=False) or spec
        return spec.replace(found["name"], here(found["name"], always=False) or found["name"], 1)

    datasets = [d.model_copy(update={"data_file": here(d.data_file)}) for d in plan.datasets]
    models = [m.model_copy(update={"model": here(m.model, always=False)}) for m in plan.models]
    judge = plan.judge and plan.judge.model_copy(
        update={"baseline": here(plan.judge.baseline), "references": here(plan.judge.references)}
    )
    likelihood = plan.likelihood and plan.likelihood.model_copy(update={"answers": here(plan.likelihood.answers)})
    update = {"datasets": datasets, "models": models, "judge": judge, "prompts": [prompt(p) for p in plan.prompts]}
    return plan.model_copy(update={**update, "likelihood": likelihood})


def prompt_variants(spec: str) -> list[tuple[str, int | None, PromptSet]]:
    """(variant name, K, prompt set) for a plan's prompt entry: one set, or one per K of NAME:k=..."""
    found = _K.match(spec)
    if found is None:
        prompt = load_prompt(spec)
        return [(prompt.name, None, prompt)]
    prompt = load_prompt(found["name"])
    variants = []
    for k in map(int, found["ks"].split(",")):
        if k > prompt.k:
            raise UntunedError(f"{spec}: {prompt.name} has {prompt.k} examples, fewer than k={k}")
        cut = PromptSet(
            name=f"{prompt.name}@k{k}",
            system=prompt.system,
            examples=prompt.examples[:k],
            description=prompt.description,
            source=prompt.source,
        )
        variants.append((cut.name, k, cut))
    return variants


def cells(plan: Plan) -> list[tuple[Cell, PromptSet]]:
    """Every model × prompt variant × dataset; an aligned model (its own chat template) has one variant."""
    variants = [variant for spec in plan.prompts for variant in prompt_variants(spec)]
    template = [("chat-template", None, load_prompt("helpful"))]  # the prompt set goes unused in a chat template
    return [
        (
            Cell(id=f"{model.name}__{name}__{dataset.name}".replace("/", "_"), model=model, prompt=name, k=k, dataset=dataset),
            prompt,
        )
        for model in plan.models
        for name, k, prompt in (template if model.chat_template else variants)
        for dataset in plan.datasets
    ]


def dataset_items(dataset: DatasetPlan) -> list[Item]:
    """The dataset's items, cut by its tags (its benchmark says which fields carry them), ids and limit."""
    bench = benchmark(dataset.dataset)
    items = bench.load(data_file=dataset.data_file)
    if dataset.tags:
        items = [item for item in items if set(dataset.tags) & bench.item_tags(item)]
        if not items:
            raise UntunedError(f"dataset {dataset.name}: no item has any of the tags {', '.join(dataset.tags)}")
    return select(items, ids=dataset.ids, limit=dataset.limit)
