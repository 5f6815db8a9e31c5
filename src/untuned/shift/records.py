"""Typed records of a shift analysis, and the aggregates computed from them.

At each answer position one token is *ranked* under the *base* distribution (the untuned model, or the
model without the URIAL prefix in ``context`` mode): rank 1 is **unshifted**, 2-3 **marginal**, beyond 3
**shifted**. Which token: where an aligned distribution exists (the aligned model in ``pair`` mode, the
model with the URIAL prefix in ``context`` mode), its own top-1 token (the paper's rule: the distributions
are compared, not a sampler's choices), else the answer's token. A rank counts the tokens with a strictly
larger logit (a tie goes the ranked token's way); where other tokens tie with it, ``rank_worst`` counts
them against it too, and the summary says how many positions tie and how many change category.
Where an aligned distribution exists, the token's rank and probability there are recorded, with
KL(aligned‖base) over the full vocabulary and the paper's analysis' KL@10 (KL(base‖aligned) over the tokens
in both top-10 lists, each side renormalised over its top 30).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from untuned.answers import AnswerItem
from untuned.shift.contexts import ContextKind

Category = Literal["unshifted", "marginal", "shifted"]
ShiftMode = Literal["text", "pair", "context"]
KlMethod = Literal["full", "top-k"]
CATEGORIES: tuple[Category, ...] = ("unshifted", "marginal", "shifted")
POSITION_BINS = (0, 8, 16, 32, 64, 128, 256, 512)  # absolute answer positions: [0, 8), [8, 16) ... [512, ∞)
DECILES = 10  # relative positions: the first tenth of each answer, the second ...
Ranked = Literal["aligned-top1", "answer"]
Match = Literal["ids", "text"]  # how the ranked token is found among the base's: by id, or by decoded text (AlignTDS)
KL_FULL = "KL(aligned‖base), full vocabulary"
KL_ALIGNTDS = "KL@10 (AlignTDS): KL(base‖aligned) over the tokens in both top-10 lists, each side renormalised over its top 30"


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
    id: int = Field(description="The ranked token: the aligned side's top-1 where there is one, else the answer's.")
    text: str
    rank: int = Field(description="Rank of the token under the base distribution (1 = most likely; ties in its favour).")
    rank_worst: int | None = Field(None, description="Its rank with tied tokens counted ahead of it, where any tie.")
    prob: float = Field(description="Its probability under the base distribution.")
    category: Category
    answer_id: int | None = Field(None, description="The answer's own token, where it is not the ranked one.")
    answer_text: str | None = Field(None, description="Its text (what the answer shows at this position).")
    answer_rank: int | None = Field(
        None, description="Rank of the answer's token under the base, where it is not the ranked one."
    )
    answer_aligned_rank: int | None = Field(
        None,
        description="Rank of the answer's token under the aligned side, where it is not the ranked one: how far a "
        "sampler drawing from that side went off its first choice.",
    )
    end: bool = Field(False, description="The position after the answer: its end of sequence.")
    aligned_rank: int | None = Field(None, description="Rank under the aligned model / URIAL context.")
    aligned_prob: float | None = None
    kl: float | None = Field(
        None, description="KL(aligned‖base) in nats at this position, full vocabulary (top-k only when kl_method is top-k)."
    )
    kl_top10: float | None = Field(None, description="The paper's analysis' KL@10 at this position (KL_ALIGNTDS).")
    top: list[TopToken] = Field(default_factory=list, description="Base top-k.")
    aligned_top: list[TopToken] = Field(default_factory=list)

    def answer_rank_under(self, side: Literal["base", "aligned"]) -> int | None:
        """The rank of the answer's own token under ``side`` (None past the answer, or with no aligned side)."""
        if self.end:
            return None
        if self.answer_id is None:
            return self.rank if side == "base" else self.aligned_rank
        return self.answer_rank if side == "base" else self.answer_aligned_rank


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
    mean_kl: float | None = Field(None, description=KL_FULL + " (mean over positions).")
    mean_kl_top10: float | None = Field(None, description=KL_ALIGNTDS + " (mean over positions).")


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
    protocol: str = Field("", description="What ran, in words: the contexts, which token is ranked, the end position.")
    base: str
    aligned: str | None = None
    context: str
    ranked: Ranked = "answer"
    kl_method: KlMethod = Field("full", description="top-k: the KL figures cover only a server's top-k tokens.")
    kl: str = Field(KL_FULL, description="What mean_kl is.")
    kl_top10: str = Field(KL_ALIGNTDS, description="What mean_kl_top10 is.")
    answers_sampling: dict | None = Field(None, description="How the analysed answers were generated, where untuned made them.")
    examples: int
    truncated: int
    ties: int = Field(0, description="Positions where other tokens tie with the ranked one (its rank counted both ways).")
    tie_changes: int = Field(0, description="Of those, positions whose category differs between the two ways.")
    top1_differs: int = Field(0, description="Positions where the answer's token is not the aligned side's top-1.")
    answer_ratios: dict[str, float] | None = Field(None, description="The ratios with the answer's own token ranked instead.")
    overall: Group
    by_dataset: dict[str, Group]
    by_tag: dict[str, dict[str, Group]]
    by_position: list[PositionBucket]
    by_relative_position: list[PositionBucket] = Field(default_factory=list, description="Deciles of each answer.")
    top_shifted: list[ShiftedToken]


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _group(examples: list[ShiftExample]) -> Group:
    counts: Counter = Counter()
    kls, kls_top10 = [], []
    for example in examples:
        counts.update(example.counts())
        kls.extend(t.kl for t in example.tokens if t.kl is not None)
        kls_top10.extend(t.kl_top10 for t in example.tokens if t.kl_top10 is not None)
    return Group(
        tokens=sum(counts.values()),
        examples=len(examples),
        ratios=ratios(counts),
        mean_kl=_mean(kls),
        mean_kl_top10=_mean(kls_top10),
    )


def _decile(token: TokenShift, length: int) -> int:
    return min(DECILES - 1, token.index * DECILES // max(length, 1))


def _answer_category(token: TokenShift) -> Category:
    return category(token.answer_rank) if token.answer_rank is not None else token.category


def _bucket(label: str, cats: list[str]) -> PositionBucket:
    n = len(cats)
    return PositionBucket(
        label=label, tokens=n, shifted=cats.count("shifted") / n if n else 0.0, marginal=cats.count("marginal") / n if n else 0.0
    )


def _positions(examples: list[ShiftExample]) -> tuple[list[PositionBucket], list[PositionBucket]]:
    """Shift by absolute position (POSITION_BINS) and by tenth of each answer."""
    absolute: dict[int, list[str]] = defaultdict(list)
    relative: dict[int, list[str]] = defaultdict(list)
    for example in examples:
        for token in example.tokens:
            absolute[max(i for i, low in enumerate(POSITION_BINS) if token.index >= low)].append(token.category)
            relative[_decile(token, len(example.tokens))].append(token.category)
    labels = [f"{low}-{high - 1}" for low, high in zip(POSITION_BINS, POSITION_BINS[1:])] + [f"{POSITION_BINS[-1]}+"]
    by_relative = [_bucket(f"{10 * i}-{10 * i + 10}%", relative[i]) for i in sorted(relative)]
    return [_bucket(labels[i], absolute[i]) for i in sorted(absolute)], by_relative


def _groups(examples: list[ShiftExample]) -> tuple[dict[str, Group], dict[str, dict[str, Group]]]:
    """The groups of examples by dataset and by tag."""
    by_dataset: dict[str, list[ShiftExample]] = defaultdict(list)
    by_tag: dict[str, dict[str, list[ShiftExample]]] = defaultdict(lambda: defaultdict(list))
    for example in examples:
        by_dataset[example.dataset or "(none)"].append(example)
        for kind, labels in example.tags.items():
            for label in labels:
                by_tag[kind][label].append(example)
    datasets = {name: _group(group) for name, group in sorted(by_dataset.items())}
    return datasets, {kind: {label: _group(g) for label, g in sorted(groups.items())} for kind, groups in sorted(by_tag.items())}


def _top_shifted(tokens: list[TokenShift], top: int) -> list[ShiftedToken]:
    seen = Counter(t.text for t in tokens)
    shifted = Counter(t.text for t in tokens if t.category == "shifted")
    return [ShiftedToken(text=text, count=count, share=count / seen[text]) for text, count in shifted.most_common(top)]


def summarize(
    examples: Iterable[ShiftExample],
    *,
    mode: ShiftMode,
    base: str,
    aligned: str | None,
    context: str,
    kl_method: KlMethod = "full",
    top: int = 30,
    protocol: str = "",
    ranked: Ranked = "answer",
    answers_sampling: dict | None = None,
) -> ShiftSummary:
    """Aggregate examples: ratios overall / by dataset / by tag, shift by absolute and relative position, ties,
    where the answer's token is not the ranked one, and the top shifted tokens."""
    examples = list(examples)
    tokens = [t for e in examples for t in e.tokens]
    tied = [t for t in tokens if t.rank_worst is not None]
    by_dataset, by_tag = _groups(examples)
    by_position, by_relative = _positions(examples)
    return ShiftSummary(
        mode=mode,
        base=base,
        aligned=aligned,
        context=context,
        kl_method=kl_method,
        examples=len(examples),
        truncated=sum(e.truncated for e in examples),
        overall=_group(examples),
        by_dataset=by_dataset,
        by_tag=by_tag,
        by_position=by_position,
        by_relative_position=by_relative,
        protocol=protocol,
        ranked=ranked,
        answers_sampling=answers_sampling,
        ties=len(tied),
        tie_changes=sum(category(t.rank_worst) != t.category for t in tied),  # type: ignore[arg-type]
        top1_differs=sum(t.answer_id is not None for t in tokens),
        answer_ratios=ratios(Counter(_answer_category(t) for t in tokens if not t.end)) if ranked == "aligned-top1" else None,
        top_shifted=_top_shifted(tokens, top),
    )


class ShiftSettings(BaseModel):
    """What an analysis run is; a resumed run must have the same settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ShiftMode
    base: str = Field(description="Name of the base model.")
    aligned: str | None = Field(None, description="The aligned side: an aligned model (pair), the base with URIAL (context).")
    context: ContextKind = Field("plain", description="How the query is shown to the base (text, pair modes).")
    prompt_name: str | None = None
    prompt_hash: str | None = None
    top_k: int = Field(5, ge=1, le=50)
    kl_method: KlMethod = Field("full", description="full: KL over the whole vocabulary; top-k: over a server's top-k only.")
    aligned_template: bool = Field(False, description="pair: the aligned model saw the query in its own chat template.")
    ranked: Ranked = Field("answer", description="The token ranked at each position: the aligned side's top-1, or the answer's.")
    end: bool | Literal["marked"] = Field(
        False, description="The position after the answer is scored too: always, or where its text ends with '</s>' (marked)."
    )
    aligned_family: str | None = Field(None, description="pair, AlignTDS: the aligned model's prompt family (its string).")
    aligned_system: str | None = Field(None, description="pair, AlignTDS: the system prompt in that string (None: none).")
    match: Match = Field(
        "ids",
        description="ids: a token agrees with the base's by id; text: by decoded text, first in the top 10 (AlignTDS).",
    )
    answers_sampling: dict | None = Field(None, description="How untuned generated the answers (None: given answers).")

    @property
    def protocol(self) -> str:
        """What ran, in words (summary.json, the CLI): the contexts, the ranked token, the end position."""
        contexts = {"plain": "the query as plain text", "urial": "the query in the URIAL prompt"}
        contexts["aligntds"] = "AlignTDS's context (# Query / # Answer fences, with BOS)"
        if self.mode == "context":
            sides = "the base without the URIAL prefix (base) against the base with it (aligned)"
        elif self.mode == "pair":
            aligned = "its chat template" if self.aligned_template else contexts[self.context]
            if self.aligned_family:
                system = "its system prompt" if self.aligned_system else "no system prompt"
                aligned = f"URIAL's {self.aligned_family} string with {system}, both read by the models' own tokenizers"
            sides = f"{self.base} given {contexts[self.context]} against {self.aligned} given {aligned}"
        else:
            sides = f"{self.base} given {contexts[self.context]}"
        ranked = "the aligned side's top-1 token" if self.ranked == "aligned-top1" else "the answer's token"
        name = "aligntds (the paper's analysis): " if self.is_aligntds else ""
        if self.mode == "pair" and self.match == "ids":
            name = "ids: "  # --protocol ids: tokens agree by id
        matched = "; matched by decoded text in the base's top 10, as AlignTDS does" if self.match == "text" else ""
        ending = {True: "; the end position scored", "marked": "; the end scored where the answer ends with '</s>'"}
        return f"{name}{sides}; ranked: {ranked}{matched}{ending.get(self.end, '')}"

    @property
    def is_aligntds(self) -> bool:
        return (self.mode, self.context, self.ranked, self.end, self.match) == (
            "pair",
            "aligntds",
            "aligned-top1",
            "marked",
            "text",
        ) and bool(self.aligned_family)
