"""Judge modes: one module each, behind one base (:class:`~untuned.judge.mode.JudgeMode`), found
through a registry. A plugin adds a mode with an entry point (group ``untuned.judge_modes``, value
``module:attribute`` naming an instance). Adding one takes one module and its test
(docs/architecture.md, "Adding a judge mode").

- ``multi`` (aspects.py): JUST-EVAL's five aspects, 1-5 with a rationale each;
- ``safety`` (safety.py): safety, 1-5;
- ``pairwise`` (pairwise.py): two answers per aspect and overall, in both orders (untuned's rule, AlpacaEval's
  preference);
- ``tag`` (tags.py): the query's task types, topics and difficulty;
- ``mt-bench`` (mt_bench.py): MT-bench single-answer grading, 1-10 per turn;
- ``mt-bench-pair`` (mt_bench_pair.py): MT-bench pairwise, per turn in both orders (FastChat's rule).
"""

from __future__ import annotations

from functools import cache

from untuned.errors import UntunedError
from untuned.judge.mode import JudgeMode
from untuned.judge.sections import ReportSection
from untuned.plugins import discover


@cache
def modes() -> dict[str, JudgeMode]:
    """Every judge mode by name: the built-in ones, then those of installed plugins."""
    return discover(__name__, __path__, "MODE", "untuned.judge_modes", JudgeMode, lambda m: m.name)


def mode_names() -> list[str]:
    return list(modes())


def judge_mode(name: str) -> JudgeMode:
    """The judge mode called ``name``; an error lists the known ones."""
    found = modes().get(name)
    if found is None:
        raise UntunedError(f"unknown judge mode {name!r}; known: {', '.join(modes())}.")
    return found


def section_of(name: str) -> ReportSection | None:
    """The report section a mode's verdicts feed (None for a mode whose plugin is not installed)."""
    found = modes().get(name)
    return found.section if found is not None else None


def modes_of_section(section: ReportSection) -> tuple[str, ...]:
    return tuple(name for name, mode in modes().items() if mode.section == section)


def own_sections() -> list[ReportSection]:
    """The sections of installed modes that draw a table of their own (a plugin's mode of a new shape)."""
    return list(dict.fromkeys(m.section for m in modes().values() if m.section is not None and m.section.rows is not None))
