"""Typed records of a shift analysis, and the aggregates computed from them.

Each answer token gets its rank under the *base* distribution (the untuned model, or the model
without the URIAL prefix in ``context`` mode): rank 1 is **unshifted**, 2-3 **marginal**, beyond 3
**shifted**. Where a second distribution exists (the aligned model in ``pair`` mode, the model
with the URIAL prefix in ``context`` mode) the token's rank and probability there and the KL
divergence KL(aligned || base) are recorded too.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.answers import AnswerItem

Category = Literal["unshifted", "marginal", "shifted"]
ShiftMode = Literal["text", "pair", "context"]
KlMethod = Literal["full", "top-k"]
CATEGORIES: tuple[Category, ...] = ("unshifted", "marginal", "shifted")
POSITION_BINS = (0, 8, 16, 32, 64, 128, 256, 512)  # absolute answer positions: [0, 8), [8, 16) ... [512, ∞)


def category(rank: int) -> Category:
    return "unshifted" if rank == 1 else "marginal" if rank <= 3 else "shifted"


class TopToken(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int
    text: str
    prob: float


class TokenShift(BaseModel):
    """One answer position."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="Position in the answer, from 0.")
    id: int
    text: str
    rank: int = Field(description="Rank of the token under the base distribution (1 = most likely).")
    prob: float = Field(description="Its probability under the base distribution.")
    category: Category
    aligned_rank: int | None = Field(None, description="Rank under the aligned model / URIAL context.")
    aligned_prob: float | None = None
    kl: float | None = Field(
        None, description="KL(aligned || base) in nats at this position (over the top-k only when the run's kl_method is top-k)."
    )
    top: list[TopToken] = Field(default_factory=list, description="Base top-k.")
    aligned_top: list[TopToken] = Field(default_factory=list)


class ShiftExample(AnswerItem):
    """One analysed answer (the item, as read), with its token records."""

    mode: ShiftMode
    tokens: list[TokenShift]
    truncated: bool = Field(False, description="The answer was cut to fit the context window.")
    answer_tokens: int = Field(description="Tokens in the whole answer, before any truncation.")

    def counts(self) -> Counter:
        return Counter(t.category for t in self.tokens)

    def ratios(self) -> dict[str, float]:
        return ratios(self.counts())


def ratios(counts: Counter) -> dict[str, float]:
    total = sum(counts[c] for c in CATEGORIES)
    return {c: (counts[c] / total if total else 0.0) for c in CATEGORIES}


class Group(BaseModel):
    tokens: int
    examples: int
    ratios: dict[str, float]
    mean_kl: float | None = None


class PositionBucket(BaseModel):
    label: str
    tokens: int
    shifted: float
    marginal: float


class ShiftedToken(BaseModel):
    text: str
    count: int
    share: float = Field(description="Share of this token's occurrences that are shifted.")


class ShiftSummary(BaseModel):
    """Everything ``summary.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    mode: ShiftMode
    base: str
    aligned: str | None = None
    context: str
    kl_method: KlMethod = Field("full", description="top-k: the KL figures cover only a server's top-k tokens.")
    examples: int
    truncated: int
    overall: Group
    by_dataset: dict[str, Group]
    by_tag: dict[str, dict[str, Group]]
    by_position: list[PositionBucket]
    top_shifted: list[ShiftedToken]


def _group(examples: list[ShiftExample]) -> Group:
    counts: Counter = Counter()
    kls = []
    for example in examples:
        counts.update(example.counts())
        kls.extend(t.kl for t in example.tokens if t.kl is not None)
    mean_kl = math.fsum(kls) / len(kls) if kls else None
    return Group(tokens=sum(counts.values()), examples=len(examples), ratios=ratios(counts), mean_kl=mean_kl)


def _bucket(label: str, cats: list[str]) -> PositionBucket:
    n = len(cats)
    return PositionBucket(
        label=label, tokens=n, shifted=cats.count("shifted") / n if n else 0.0, marginal=cats.count("marginal") / n if n else 0.0
    )


def summarize(
    examples: Iterable[ShiftExample],
    *,
    mode: ShiftMode,
    base: str,
    aligned: str | None,
    context: str,
    kl_method: KlMethod = "full",
    top: int = 30,
) -> ShiftSummary:
    """Aggregate examples: ratios overall / by dataset / by tag, shift by position, top shifted tokens."""
    examples = list(examples)
    by_dataset: dict[str, list[ShiftExample]] = defaultdict(list)
    by_tag: dict[str, dict[str, list[ShiftExample]]] = defaultdict(lambda: defaultdict(list))
    absolute: dict[int, list[str]] = defaultdict(list)
    seen: Counter = Counter()
    shifted: Counter = Counter()
    for example in examples:
        by_dataset[example.dataset or "(none)"].append(example)
        for kind, labels in example.tags.items():
            for label in labels:
                by_tag[kind][label].append(example)
        for token in example.tokens:
            bin_index = max(i for i, low in enumerate(POSITION_BINS) if token.index >= low)
            absolute[bin_index].append(token.category)
            seen[token.text] += 1
            if token.category == "shifted":
                shifted[token.text] += 1
    labels = [f"{low}-{high - 1}" for low, high in zip(POSITION_BINS, POSITION_BINS[1:])] + [f"{POSITION_BINS[-1]}+"]
    return ShiftSummary(
        mode=mode,
        base=base,
        aligned=aligned,
        context=context,
        kl_method=kl_method,
        examples=len(examples),
        truncated=sum(e.truncated for e in examples),
        overall=_group(examples),
        by_dataset={name: _group(group) for name, group in sorted(by_dataset.items())},
        by_tag={kind: {label: _group(g) for label, g in sorted(groups.items())} for kind, groups in sorted(by_tag.items())},
        by_position=[_bucket(labels[i], absolute[i]) for i in sorted(absolute)],
        top_shifted=[ShiftedToken(text=text, count=count, share=count / seen[text]) for text, count in shifted.most_common(top)],
    )
