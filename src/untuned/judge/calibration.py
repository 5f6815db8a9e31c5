"""Judge calibration: run a judge on answers that GPT-4 has already judged for just-eval, and measure
how far its scores are from the published ones (Spearman per aspect, exact and within-one agreement,
quadratically weighted kappa), before trusting it on answers nobody has judged.

The published verdicts are just-eval's judged files (MIT licence): read from a local copy, or
downloaded once from the just-eval repository into the cache.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from untuned.answers import AnswerItem
from untuned.errors import UntunedError
from untuned.judge.verdicts import Verdict
from untuned.stats import Agreement, agreement

# GPT-4-turbo's verdicts on gpt-3.5-turbo-0301's answers to just-eval's first 100 regular queries.
PUBLISHED = (
    "https://raw.githubusercontent.com/Re-Align/just-eval/main/leaderboard/eval_results/gpt-4-turbo/"
    "gpt-3.5-turbo-0301/gpt-3.5-turbo-0301.general.0-100.json"
)


class Calibration(BaseModel):
    """Agreement of a judge with published verdicts of the same answers, per aspect."""

    judge: str
    published_judge: str
    items: int
    agreements: list[Agreement]


def fetch_published(source: str, cache_dir: Path) -> Path:
    """A local path as it is; an http(s) URL downloaded once into ``cache_dir``."""
    if not source.startswith(("http://", "https://")):
        path = Path(source)
        if not path.is_file():
            raise UntunedError(f"published verdicts not found: {path}")
        return path
    target = cache_dir / source.rstrip("/").rsplit("/", 1)[-1]
    if target.is_file():
        return target
    import httpx  # pragma: no cover - needs network access

    try:  # pragma: no cover
        response = httpx.get(source, follow_redirects=True, timeout=60)
        response.raise_for_status()
    except httpx.HTTPError as exc:  # pragma: no cover
        raise UntunedError(f"could not download {source} ({exc}); pass a local copy with --published") from exc
    cache_dir.mkdir(parents=True, exist_ok=True)  # pragma: no cover
    partial = target.with_suffix(".partial")  # pragma: no cover
    partial.write_bytes(response.content)  # pragma: no cover
    partial.replace(target)  # pragma: no cover
    return target  # pragma: no cover


def sample_published(published: list[Verdict], *, sample: int, seed: int = 0) -> list[Verdict]:
    """``sample`` scored verdicts of one mode (the most common among ``published``), drawn with ``seed``,
    in id order."""
    verdicts = [v for v in published if v.status == "scored"]
    if not verdicts:
        raise UntunedError("the published verdicts hold no scored ones")
    by_mode: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        by_mode[verdict.mode].append(verdict)
    chosen = max(by_mode.values(), key=len)
    picked = random.Random(seed).sample(chosen, min(sample, len(chosen)))
    return sorted(picked, key=lambda v: (len(v.id), v.id))


def as_items(published: list[Verdict]) -> list[AnswerItem]:
    return [AnswerItem(id=v.id, query=v.query, answer=v.answer, dataset=v.dataset, generator=v.generator) for v in published]


def agreements(ours: dict[str, Verdict], published: list[Verdict]) -> Calibration:
    """Per aspect of the published verdicts: agreement over the items both judged with a score."""
    aspects = list(dict.fromkeys(a for v in published for a in v.scores))
    rows = []
    for aspect in aspects:
        pairs = [
            (ours[v.id].scores.get(aspect), v.scores.get(aspect))
            for v in published
            if v.id in ours and ours[v.id].status == "scored"
        ]
        pairs = [(int(a), int(b)) for a, b in pairs if a is not None and b is not None]
        if pairs:
            rows.append(agreement(aspect, [a for a, _ in pairs], [b for _, b in pairs]))
    judges = {v.judge for v in ours.values()}
    return Calibration(
        judge=", ".join(sorted(judges)),
        published_judge=", ".join(sorted({v.judge for v in published})),
        items=sum(1 for v in published if v.id in ours and ours[v.id].status == "scored"),
        agreements=rows,
    )
