"""Experiments: a declared grid of models × prompt sets × datasets, generated, judged and reported in
one output folder, resumable at any point (every step is one of untuned's append-only runs).

A plan is a TOML file (see ``experiments/k-curve.toml``)::

    name = "k-curve"
    [[models]]                      # any --model spec, with its loading and sampling
    name = "gemma"
    model = "default"
    max_tokens = 64
    [[datasets]]
    name = "je10"
    dataset = "just-eval"
    data_file = "../shared/data/just_eval_instruct.jsonl"
    limit = 10
    [judge]                         # url + model, or the bundled local judge
    modes = ["multi"]
    prompts = ["helpful:k=0,1,3", "safe"]   # a set by name or .urial file; NAME:k=... cuts it to its first K

The cells are every model × prompt variant × dataset. Each cell writes ``cells/<id>/answers.jsonl``
(``untuned generate``'s format) and ``cells/<id>/<mode>.jsonl`` (verdicts); ``manifest.jsonl`` holds
the plan, the versions, the model and prompt hashes and each cell's status, appended as it goes.
"""

from __future__ import annotations

import json
import platform
import re
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from untuned.backends import LoadOptions, Sampling
from untuned.backends.protocol import Dtype
from untuned.benchmarks import Item, benchmark, benchmark_names
from untuned.data import select
from untuned.errors import UntunedError
from untuned.judge.modes import judge_mode, mode_names
from untuned.pipeline import RunPlan
from untuned.prompt import PromptSet, load_prompt

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef]

_K = re.compile(r"^(?P<name>.+?):k=(?P<ks>\d+(?:,\d+)*)$")


class ModelPlan(BaseModel):
    """A model of the grid: its spec, its load options and its sampling (each checked as the library's own
    records check them), becoming one :class:`~untuned.pipeline.RunPlan`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[\w.-]+$")
    model: str = "default"
    backend: str | None = None
    gpu_layers: int = 0
    n_ctx: int | None = None
    dtype: Dtype = "auto"
    device: str = "auto"
    kv_budget: int | None = None
    concurrency: int = Field(4, ge=1, le=64)
    max_tokens: int = Field(256, ge=1)
    temperature: float | None = Field(None, ge=0.0, description="None: 0, or a benchmark's own (MT-bench's per category).")
    repetition_penalty: float = Field(1.1, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    chat_template: bool = Field(
        False,
        description="An aligned (instruct) model answering in its own chat template: the plan's prompt sets do not apply to it.",
    )

    def run_plan(self) -> RunPlan:
        loading = LoadOptions(
            backend=self.backend,
            n_ctx=self.n_ctx,
            gpu_layers=self.gpu_layers,
            dtype=self.dtype,
            device=self.device,
            kv_budget=self.kv_budget,
            parallel=self.concurrency,
        )
        sampling = Sampling(
            max_tokens=self.max_tokens,
            temperature=self.temperature or 0.0,
            repetition_penalty=self.repetition_penalty,
            top_p=self.top_p,
            seed=self.seed,
        )
        return RunPlan(
            model=self.model,
            loading=loading,
            sampling=sampling,
            temperature_given=self.temperature is not None,
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
            raise ValueError(f"unknown dataset {value!r}; known: {', '.join(benchmark_names())}")
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
            raise ValueError(f"unknown judge mode {unknown[0]!r}; known: {', '.join(mode_names())}")
        return value

    @model_validator(mode="after")
    def _baseline_for_pairwise(self) -> JudgePlan:
        comparing = [m for m in self.modes if judge_mode(m).needs_second]
        if comparing and not self.baseline:
            raise ValueError(f"{comparing[0]} judging needs a baseline (an answer file)")
        return self


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[\w.-]+$")
    models: list[ModelPlan] = Field(min_length=1)
    prompts: list[str] = Field(min_length=1, description="Prompt sets: names, .urial files, NAME:k=0,1,3.")
    datasets: list[DatasetPlan] = Field(min_length=1)
    judge: JudgePlan | None = None
    shift: bool = Field(False, description="Per cell, how far the URIAL prefix moves the base model (shift context).")
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
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = next((str(p) for p in reversed(first["loc"]) if isinstance(p, str)), "")
        line = next((n for n, row in enumerate(text.splitlines(), 1) if re.match(rf"\s*{re.escape(key)}\s*=", row)), None)
        where = ".".join(str(p) for p in first["loc"])
        at = f" line {line}" if line else ""
        raise UntunedError(f"{path}{at}: {where}: {first['msg']}") from None
    for variant in plan.prompts:  # every prompt set readable before anything runs
        prompt_variants(variant)
    known = {cell.name for cell, _ in cells(plan)}
    unknown = [name for pair in plan.compare or [] for name in pair if name not in known]
    if unknown:
        names, have = ", ".join(map(repr, unknown)), ", ".join(sorted(known))
        raise UntunedError(f"{path}: compare names {names}: no such MODEL/VARIANT; the plan has {have}")
    return plan


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


def _count(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.exists() else 0


class Experiment:
    """A plan run in ``out``: see the module docstring."""

    def __init__(self, plan: Plan, out: str | Path) -> None:
        self.plan, self.out = plan, Path(out)
        self.cells = cells(plan)
        self.items = {d.name: dataset_items(d) for d in plan.datasets}  # each dataset read once

    def folder(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.id

    def describe(self) -> list[dict]:
        """Per cell: items, generations and judge requests planned (pairwise asks both orders, MT-bench
        each turn), and what already exists."""
        rows = []
        for cell, _ in self.cells:
            items = len(self.items[cell.dataset.name])
            folder = self.folder(cell)
            applicable = self.modes_for(cell)
            requests = sum(items * judge_mode(m).requests_per_item for m in applicable)
            judged = sum(_count(folder / f"{m}.jsonl") for m in applicable)
            rows.append(
                {
                    "cell": cell.id,
                    "items": items,
                    "generations": items,
                    "judge_requests": requests,
                    "answered": _count(folder / "answers.jsonl"),
                    "judged": judged,
                }
            )
        return rows

    def modes_for(self, cell: Cell) -> list[str]:
        """The plan's judge modes that apply to the cell: MT-bench's modes to MT-bench items, the others to the rest."""
        modes = self.plan.judge.modes if self.plan.judge else []
        mt_bench = benchmark(cell.dataset.dataset).turns > 1
        return [m for m in modes if (judge_mode(m).takes == "mt-bench") == mt_bench]

    def _judge(self, judge_model, cell: Cell, mode: str, target: Path) -> bool:
        """Judge a cell's answers in ``mode``, if it applies to the cell (see :meth:`modes_for`)."""
        from untuned.pipeline import judge_answers, judged_items

        plan, answers = self.plan.judge, self.folder(cell) / "answers.jsonl"
        if mode not in self.modes_for(cell):
            return False
        items, second = judged_items(
            mode, answers, second=plan.baseline, references=plan.references, require_references=plan.references is not None
        )
        judge_answers(judge_model, mode, items, target, second_answers=second, concurrency=plan.concurrency)
        return True

    def _shift(self, cell: Cell, base, second, prompt: PromptSet) -> None:
        """The cell's answers ranked by the base model without and with the URIAL prefix (resumable)."""
        from untuned.answers import read_answers
        from untuned.pipeline import shift_answers

        items = read_answers(self.folder(cell) / "answers.jsonl")
        summary = shift_answers(base, second, prompt, items, self.folder(cell) / "shift")
        self.log_event({"event": "shifted", "cell": cell.id, "ratios": summary.overall.ratios})

    def log_event(self, event: dict) -> None:
        """Append ``event`` to manifest.jsonl, stamped with the time."""
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / "manifest.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": time.time(), **event}, ensure_ascii=False) + "\n")

    def run(self, *, on_step: Callable[[str], None] | None = None, load_judge=None, load_backend=None) -> list[Path]:
        """Generate and judge every cell (what is done already is skipped); return the verdict files."""
        from untuned.judge.models import load_judge_model

        self.log_event(
            {
                "event": "start",
                "plan": self.plan.model_dump(),
                "untuned": version("untuned"),
                "python": platform.python_version(),
                "prompts": {c.prompt: p.content_hash for c, p in self.cells},
            }
        )
        step = on_step or (lambda _: None)
        verdict_files: list[Path] = []
        models, judge_model = _Models(load_backend), None
        try:
            for cell, prompt in self.cells:
                assistant = models.assistant(cell.model, prompt)
                step(f"{cell.id}: answering")
                self._answer(cell, assistant)
                if self.plan.shift and not cell.model.chat_template:
                    step(f"{cell.id}: shift")
                    self._shift(cell, assistant.backend, models.second(cell.model), prompt)
                if self.plan.judge is None:
                    continue
                if judge_model is None:
                    plan = self.plan.judge
                    judge_model = (load_judge or load_judge_model)(url=plan.url, model=plan.model, parallel=plan.concurrency)
                for mode in self.plan.judge.modes:
                    step(f"{cell.id}: judging ({mode})")
                    target = self.folder(cell) / f"{mode}.jsonl"
                    if self._judge(judge_model, cell, mode, target):
                        verdict_files.append(target)
                        self.log_event({"event": "judged", "cell": cell.id, "mode": mode})
        finally:
            models.close()
            if judge_model is not None:
                judge_model.close()
        self.log_event({"event": "done"})
        return verdict_files

    def _answer(self, cell: Cell, assistant) -> None:
        """The cell's answers, as ``untuned generate`` makes them (the same pipeline step; what is there is kept)."""
        from untuned.pipeline import answer

        spec = cell.model
        folder = self.folder(cell)
        folder.mkdir(parents=True, exist_ok=True)
        bench = benchmark(cell.dataset.dataset)
        items = self.items[cell.dataset.name]
        answer(spec.run_plan(), assistant, bench, items, folder / "answers.jsonl", concurrency=spec.concurrency)
        prompt_hash = assistant.prompt.content_hash
        self.log_event({"event": "answered", "cell": cell.id, "model_spec": spec.model, "prompt_hash": prompt_hash})


class _Models:
    """The model whose cells run now (cells come model by model) and, for the shift, a second instance
    of it; both closed before the next model loads, so one model is in memory at a time."""

    def __init__(self, load_backend=None) -> None:
        from untuned.backends import load_backend as default_load

        self.load = load_backend or default_load
        self.name: str | None = None
        self.current = self._second = None

    def assistant(self, spec: ModelPlan, prompt: PromptSet):
        from untuned.assistant import Assistant

        if spec.name != self.name:
            self.close()
            plan = spec.run_plan()
            self.current, self.name = Assistant(self.load(plan.model, plan.loading), prompt, plan.sampling), spec.name
        self.current.prompt = prompt
        return self.current

    def second(self, spec: ModelPlan):
        """Another instance of the current base: context mode scores with it, side by side."""
        if self._second is None:
            self._second = self.load(spec.model, spec.run_plan().loading.model_copy(update={"parallel": 1}))
        return self._second

    def close(self) -> None:
        for backend in (self._second, self.current and self.current.backend):
            if backend is not None:
                backend.close()
        self.current = self._second = self.name = None
