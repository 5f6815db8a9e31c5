"""The input kinds judge modes take, by name: how their items are read from a file, and which datasets they
apply to. A mode says which kind it ``takes``; the pipeline, ``experiment`` and ``untuned judge`` ask the kind,
never the mode's name. A plugin whose mode takes a new kind registers it here (:func:`register_input_kind`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from untuned.answers import read_answers
from untuned.benchmarks.mt_bench import attach_references
from untuned.errors import UntunedError
from untuned.interop.fastchat import read_mt_bench_answers, read_references


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may need beside the file: tags by id, MT-bench's questions and reference answers."""

    tags: dict | None = None
    questions: str | Path | None = None
    references: str | Path | None = None
    require_references: bool = True


@dataclass(frozen=True)
class InputKind:
    """``read``: the items of a file; ``multi_turn``: it judges multi-turn datasets' items (and only those);
    ``one_file``: its items come from one answer file alone (``untuned judge MODE FILE``)."""

    name: str
    read: Callable[[str | Path, ReadOptions], list[Any]]
    multi_turn: bool = False
    one_file: bool = True

    def applies_to(self, turns: int) -> bool:
        """Whether it judges the items of a dataset with ``turns`` turns per item."""
        return self.multi_turn == (turns > 1)


def _answers(path: str | Path, options: ReadOptions) -> list[Any]:
    return read_answers(path, tags=options.tags)


def _mt_bench(path: str | Path, options: ReadOptions) -> list[Any]:
    found = read_references(options.references) if options.references else None
    items = read_mt_bench_answers(path, questions=options.questions)
    return attach_references(items, found, required=options.require_references)


INPUT_KINDS: dict[str, InputKind] = {}


def register_input_kind(kind: InputKind) -> InputKind:
    INPUT_KINDS[kind.name] = kind
    return kind


register_input_kind(InputKind("answers", _answers))
register_input_kind(InputKind("queries", _answers))  # the query alone is judged; the file is an answer file
register_input_kind(InputKind("mt-bench", _mt_bench, multi_turn=True, one_file=False))


def input_kind(name: str) -> InputKind:
    found = INPUT_KINDS.get(name)
    if found is None:
        raise UntunedError(
            f"no input kind {name!r} is registered (known: {', '.join(INPUT_KINDS)}); the plugin whose judge mode "
            "takes it must call untuned.pipeline.inputs.register_input_kind"
        )
    return found
