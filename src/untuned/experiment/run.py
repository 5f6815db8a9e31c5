"""An experiment run: each cell answered, shifted and judged through the pipeline (what is done is kept),
one model in memory at a time, every step logged in manifest.jsonl."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from untuned.benchmarks import benchmark
from untuned.errors import UntunedError
from untuned.experiment.plan import Cell, ModelPlan, Plan, cells, dataset_items
from untuned.judge.modes import judge_mode
from untuned.pipeline.inputs import input_kind
from untuned.prompt import PromptSet


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
                    "model": cell.model.name,
                    "prompt": cell.prompt,
                    "dataset": cell.dataset.name,
                    "items": items,
                    "generations": items,
                    "judge_requests": requests,
                    "answered": _count(folder / "answers.jsonl"),
                    "judged": judged,
                }
            )
        return rows

    def modes_for(self, cell: Cell) -> list[str]:
        """The plan's judge modes that apply to the cell: those whose input kind takes its dataset's items."""
        modes = self.plan.judge.modes if self.plan.judge else []
        turns = benchmark(cell.dataset.dataset).turns
        return [m for m in modes if input_kind(judge_mode(m).takes).applies_to(turns)]

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

    def _likelihood(self, cell: Cell, backend, prompt: PromptSet) -> None:
        """The NLL per token of the plan's target answers to the cell's items, with the cell's prompt set (kept)."""
        from untuned.answers import read_answers
        from untuned.curve import answer_nlls
        from untuned.prompt import Example

        target = self.folder(cell) / "likelihood.jsonl"
        if target.exists():
            return
        wanted = {item.id for item in self.items[cell.dataset.name]}
        answers = [a for a in read_answers(self.plan.likelihood.answers) if a.id in wanted]
        if not answers:
            raise UntunedError(f"likelihood: {self.plan.likelihood.answers} answers none of {cell.dataset.name}'s items (by id)")
        scored = answer_nlls(backend, prompt, [Example(query=a.query, answer=a.answer) for a in answers])
        rows = [json.dumps({"id": a.id, "nll": nll, "tokens": n}) for a, (nll, n) in zip(answers, scored)]
        self.folder(cell).mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        partial.write_text("\n".join(rows) + "\n", encoding="utf-8")
        partial.replace(target)  # whole or absent: a run stopped midway scores the cell again
        self.log_event({"event": "likelihood", "cell": cell.id, "items": len(rows)})

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
                if self.plan.likelihood and not cell.model.chat_template:
                    step(f"{cell.id}: likelihood")
                    self._likelihood(cell, assistant.backend, prompt)
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
            backend = self.load(plan.model, plan.loading)
            self.current, self.name = Assistant(backend, prompt, plan.sampling, check_fits=False), spec.name
        self.current.prompt = prompt
        if not spec.chat_template:  # a prompt set too long for the window: refused before any item is answered
            self.current.check_fits()
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
