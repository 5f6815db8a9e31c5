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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from untuned.data import DatasetName, Item, load_items, select
from untuned.errors import UntunedError
from untuned.prompt import PromptSet, load_prompt

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef]

JudgeMode = Literal["multi", "safety", "pairwise", "mt-bench"]
_K = re.compile(r"^(?P<name>.+?):k=(?P<ks>\d+(?:,\d+)*)$")


class ModelPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[\w.-]+$")
    model: str = "default"
    gpu_layers: int = 0
    n_ctx: int | None = None
    concurrency: int = Field(4, ge=1, le=64)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    repetition_penalty: float = Field(1.1, gt=0.0)
    chat_template: bool = Field(
        False,
        description="An aligned (instruct) model answering in its own chat template: the plan's prompt sets do not apply to it.",
    )


class DatasetPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[\w.-]+$")
    dataset: DatasetName
    data_file: str | None = None
    ids: list[str] | None = None
    tags: list[str] | None = Field(
        None, description="Keep the items with any of these tags (just-eval's task types and topics, MT-bench's category)."
    )
    limit: int | None = Field(None, ge=1)


class JudgePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, description="An OpenAI-compatible judge; none: the bundled local judge.")
    model: str | None = None
    modes: list[JudgeMode] = Field(default_factory=lambda: ["multi"])
    concurrency: int = Field(4, ge=1, le=64)
    baseline: str | None = Field(None, description="pairwise: the baseline's answers (any answer file), matched by id.")
    references: str | None = Field(None, description="mt-bench: FastChat's reference answers for math, reasoning, coding.")

    @model_validator(mode="after")
    def _baseline_for_pairwise(self) -> JudgePlan:
        if "pairwise" in self.modes and not self.baseline:
            raise ValueError("pairwise judging needs a baseline (an answer file)")
        return self


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
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
    items = load_items(dataset.dataset, data_file=dataset.data_file)
    if dataset.tags:
        items = [item for item in items if set(dataset.tags) & item_tags(item)]
        if not items:
            raise UntunedError(f"dataset {dataset.name}: no item has any of the tags {', '.join(dataset.tags)}")
    return select(items, ids=dataset.ids, limit=dataset.limit)


def item_tags(item: Item) -> set[str]:
    """An item's tags: just-eval's task types and topics, MT-bench's category."""
    meta = item.meta
    listed = [*(meta.get("task_types") or []), *(meta.get("topics") or [])]
    return {str(tag) for tag in listed} | ({str(meta["category"])} if meta.get("category") else set())


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
        modes = self.plan.judge.modes if self.plan.judge else []
        for cell, _ in self.cells:
            items = len(self.items[cell.dataset.name])
            folder = self.folder(cell)
            applicable = [m for m in modes if (m == "mt-bench") == (cell.dataset.dataset == "mt-bench")]
            requests = sum(items * (2 if m in ("pairwise", "mt-bench") else 1) for m in applicable)
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

    def _judge(self, judge_model, cell: Cell, mode: str, target: Path) -> bool:
        """Judge a cell's answers in ``mode`` (mt-bench only for MT-bench cells, the others only for the rest)."""
        from untuned.answers import read_answers
        from untuned.judge import TEMPLATES, Judge
        from untuned.judge.mt_bench import attach_references, read_mt_bench_answers, read_references

        plan, answers = self.plan.judge, self.folder(cell) / "answers.jsonl"
        if (mode == "mt-bench") != (cell.dataset.dataset == "mt-bench"):
            return False
        judge = Judge(judge_model, TEMPLATES[mode])
        if mode == "mt-bench":
            references = read_references(plan.references) if plan.references else None
            items = attach_references(read_mt_bench_answers(answers), references, required=references is not None)
            judge.run(items, target, concurrency=plan.concurrency)
        elif mode == "pairwise":
            baseline = {item.id: item for item in read_answers(plan.baseline)}
            judge.run(read_answers(answers), target, second_answers=baseline, concurrency=plan.concurrency)
        else:
            judge.run(read_answers(answers), target, concurrency=plan.concurrency)
        return True

    def _shift(self, cell: Cell, base, second, prompt: PromptSet) -> None:
        """The cell's answers ranked by the base model without and with the URIAL prefix (resumable)."""
        from untuned.answers import read_answers
        from untuned.shift import ShiftAnalyzer, run_shift, write_outputs

        analyzer = ShiftAnalyzer(base, mode="context", aligned=second, prompt=prompt)
        folder = self.folder(cell) / "shift"
        run = run_shift(analyzer, read_answers(self.folder(cell) / "answers.jsonl"), folder)
        summary = write_outputs(run.records, folder, analyzer.settings, plots=False)
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
        """The cell's answers (``untuned generate``'s run: what is there already is kept)."""
        from untuned.backends import LoadOptions
        from untuned.generation import generate, generation_settings

        spec = cell.model
        folder = self.folder(cell)
        folder.mkdir(parents=True, exist_ok=True)
        loading = LoadOptions(gpu_layers=spec.gpu_layers)
        settings = generation_settings(assistant, spec.model, loading, chat_template=spec.chat_template)
        items = self.items[cell.dataset.name]
        generate(assistant, items, folder / "answers.jsonl", settings=settings, concurrency=spec.concurrency)
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
        from untuned.backends import LoadOptions, Sampling
        from untuned.generation import choose_batching

        if spec.name != self.name:
            self.close()
            options = LoadOptions(n_ctx=spec.n_ctx, gpu_layers=spec.gpu_layers, parallel=spec.concurrency)
            sampling = Sampling(
                max_tokens=spec.max_tokens, temperature=spec.temperature, repetition_penalty=spec.repetition_penalty
            )
            self.current, self.name = Assistant(self.load(spec.model, options), prompt, sampling), spec.name
            choose_batching(self.current.backend)  # answers independent of the concurrency
        self.current.prompt = prompt
        return self.current

    def second(self, spec: ModelPlan):
        """Another instance of the current base: context mode scores with it, side by side."""
        from untuned.backends import LoadOptions

        if self._second is None:
            self._second = self.load(spec.model, LoadOptions(n_ctx=spec.n_ctx, gpu_layers=spec.gpu_layers))
        return self._second

    def close(self) -> None:
        for backend in (self._second, self.current and self.current.backend):
            if backend is not None:
                backend.close()
        self.current = self._second = self.name = None
