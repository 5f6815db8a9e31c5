"""The alignment curve without a judge: how far K examples move the base model toward held-out answers of the same
kind, as the mean per-token negative log-likelihood (NLL) of those answers with K other examples in the prompt.

For each of ``orders`` random orders of the examples and each held-out example (leave-one-out), the context holds
the first K of the *other* examples in that order, so an answer is never scored with itself in its prompt
(:func:`plan`). The curve is the mean over held-out examples (each first averaged over the orders), with a
bootstrap interval over examples; the fit NLL(K) ≈ c + a·K^(−α) is the power law many-shot studies report
(Anil et al. 2024; Agarwal et al. 2024), with α's interval from refits on the bootstrap samples.

Prompts are scored in the order that lets each reuse the last one's evaluated tokens: for one order and one
held-out example, K grows and each context extends the previous one (:func:`scoring`).
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from untuned.backends import Backend
from untuned.conversation import Conversation
from untuned.errors import UntunedError
from untuned.prompt import Example, PromptSet

BOOTSTRAP = 1000  # resamples of the held-out examples for each interval
FIT_BOOTSTRAP = 200  # of those, the ones α is refitted on


@dataclass(frozen=True)
class Cell:
    """One scoring: in ``order``, the held-out example ``item`` after the ``k`` examples ``context`` (indices)."""

    order: int
    k: int
    item: int
    context: tuple[int, ...]


@dataclass(frozen=True)
class Point:
    """One scored cell: the held-out answer's NLL (nats per token) and its number of tokens."""

    order: int
    k: int
    item: int
    nll: float
    tokens: int
    context: tuple[int, ...]


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Fit:
    """NLL(K) ≈ c + a·K^(−α) over the K > 0 of the curve; ``alpha_interval`` from bootstrap refits."""

    c: float
    a: float
    alpha: float
    alpha_interval: tuple[float, float] | None


@dataclass
class Curve:
    ks: list[int]
    by_k: dict[int, Interval]
    fit: Fit | None
    fit_problem: str | None
    points: list[Point] = field(repr=False)
    reference: Interval | None = None  # the held-out answers under another prompt set (a bundled one)
    reference_name: str | None = None
    aligned: Interval | None = None  # the answers under an aligned model, in its own chat template
    aligned_name: str | None = None


def plan(n: int, ks: Sequence[int], orders: int, seed: int) -> list[Cell]:
    """Every cell of a curve over ``n`` examples, in the order that reuses evaluated prompts: for each order and
    each held-out example, K ascending. The context never holds the held-out example."""
    if n < 2:
        raise UntunedError(f"a curve needs at least 2 examples (one held out, one to show); this set has {n}")
    if not ks or min(ks) < 0:
        raise UntunedError("--k takes numbers of examples, 0 or more")
    if max(ks) > n - 1:
        raise UntunedError(f"K = {max(ks)} needs {max(ks) + 1} examples (one held out); this set has {n}")
    if orders < 1:
        raise UntunedError("--orders must be 1 or more")
    rng = random.Random(seed)
    cells = []
    for order in range(orders):
        permutation = rng.sample(range(n), n)
        for item in range(n):
            others = [j for j in permutation if j != item]
            cells += [Cell(order, k, item, tuple(others[:k])) for k in sorted(set(ks))]
    return cells


def prompt_ids(backend: Backend, prompt: PromptSet, examples: Sequence[Example], cell: Cell) -> tuple[list[int], int]:
    """The ids of the cell's prompt (the set's system text, its K examples, the held-out query) followed by the
    held-out answer, and where the answer starts."""
    shown = PromptSet(prompt.name, prompt.system, tuple(examples[j] for j in cell.context))
    return answered_ids(backend, shown, examples[cell.item])


def answered_ids(backend: Backend, prompt: PromptSet, example: Example) -> tuple[list[int], int]:
    """``example``'s query after ``prompt``'s examples, then its answer: the ids, and where the answer starts."""
    conversation = Conversation(prompt)
    conversation.add_user(example.query)
    context = backend.tokenize(conversation.render().text, add_special=True)
    return context + backend.tokenize(example.answer), len(context)


@contextmanager
def scoring(backend: Backend) -> Iterator[Callable[[Sequence[int], int], np.ndarray]]:
    """(ids, start) → log-probabilities of ``ids[start:]``: reusing evaluated prefixes where the backend can (the
    llama.cpp backend's scoring session), else one teacher-forced pass each."""
    session = getattr(backend, "scoring_session", None)
    if session is not None:
        with session() as logprobs:
            yield logprobs
        return
    yield lambda ids, start: np.asarray(backend.score(ids, start=start, top_k=1).logprobs)


def measure(
    backend: Backend,
    prompt: PromptSet,
    ks: Sequence[int],
    *,
    orders: int = 5,
    seed: int = 0,
    reference: PromptSet | None = None,
    on_point: Callable[[Point], None] | None = None,
) -> Curve:
    """The curve of ``prompt``'s examples (held out one at a time) on ``backend``; see the module docstring."""
    examples = list(prompt.examples)
    cells = plan(len(examples), ks, orders, seed)
    points = []
    with scoring(backend) as logprobs:
        for cell in cells:
            ids, start = prompt_ids(backend, prompt, examples, cell)
            found = logprobs(ids, start)
            point = Point(cell.order, cell.k, cell.item, float(-found.mean()), len(found), cell.context)
            points.append(point)
            if on_point:
                on_point(point)
    reference_nll = None
    if reference is not None:  # the generic set's examples (all of them) before each held-out query
        reference_nll = np.asarray([nll for nll, _ in answer_nlls(backend, reference, examples)])
    return summarize(points, sorted(set(ks)), len(examples), seed, reference_nll, reference.name if reference else None)


def summarize(
    points: list[Point], ks: list[int], n: int, seed: int, reference: np.ndarray | None = None, reference_name: str | None = None
) -> Curve:
    """Per-K means with bootstrap intervals over held-out examples, and the power-law fit."""
    table = np.zeros((len(ks), n))  # [K, item]: NLL averaged over the orders
    counts = np.zeros((len(ks), n))
    for point in points:
        row = ks.index(point.k)
        table[row, point.item] += point.nll
        counts[row, point.item] += 1
    table /= np.maximum(counts, 1)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, n, size=(BOOTSTRAP, n))
    boot = table[:, samples].mean(axis=2)  # [K, resample]
    by_k = {k: Interval(float(table[i].mean()), *map(float, np.percentile(boot[i], [2.5, 97.5]))) for i, k in enumerate(ks)}
    fit, problem = fit_power_law(ks, table.mean(axis=1), boot[:, :FIT_BOOTSTRAP])
    ref = None
    if reference is not None:
        ref_boot = reference[samples].mean(axis=1)
        ref = Interval(float(reference.mean()), *map(float, np.percentile(ref_boot, [2.5, 97.5])))
    return Curve(ks, by_k, fit, problem, points, ref, reference_name)


def fit_power_law(ks: list[int], means: np.ndarray, boot: np.ndarray) -> tuple[Fit | None, str | None]:
    """c + a·K^(−α) by least squares over the K > 0 (at least 3 of them), α bounded to [0, 5]; α's 95% interval
    from the fits to the bootstrap means. (None, why) where it cannot be fitted."""
    from scipy.optimize import OptimizeWarning, curve_fit

    positive = [i for i, k in enumerate(ks) if k > 0]
    if len(positive) < 3:
        return None, f"a fit needs 3 or more K above 0; this curve has {len(positive)}"
    x = np.asarray([ks[i] for i in positive], dtype=float)

    def law(k, c, a, alpha):
        return c + a * np.power(k, -alpha)

    def fitted(y):
        start = (float(y.min()), float(y.max() - y.min()) or 1e-3, 0.5)
        bounds = ([-math.inf, -math.inf, 0.0], [math.inf, math.inf, 5.0])
        with warnings.catch_warnings():  # three points fit exactly: no covariance, which is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            return curve_fit(law, x, y, p0=start, bounds=bounds, maxfev=20_000)[0]

    try:
        c, a, alpha = fitted(means[positive])
    except (RuntimeError, ValueError) as exc:
        return None, f"the power law did not converge ({exc})"
    alphas = []
    for column in boot.T:
        try:
            alphas.append(fitted(column[positive])[2])
        except (RuntimeError, ValueError):
            continue
    interval = tuple(map(float, np.percentile(alphas, [2.5, 97.5]))) if len(alphas) >= 20 else None
    return Fit(float(c), float(a), float(alpha), interval), None


def answer_nlls(backend: Backend, prompt: PromptSet, items: Sequence[Example]) -> list[tuple[float, int]]:
    """(NLL per token, tokens) of each example's answer under ``backend`` with ``prompt``'s examples before its
    query: an experiment cell's likelihood measure, and the curve's reference."""
    found = []
    with scoring(backend) as logprobs:
        for example in items:
            scored = logprobs(*answered_ids(backend, prompt, example))
            found.append((float(-scored.mean()), len(scored)))
    return found


def bootstrap_interval(values: Sequence[float], seed: int = 0) -> Interval:
    """The mean of ``values`` and its 95% bootstrap interval (BOOTSTRAP resamples)."""
    array = np.asarray(values, dtype=float)
    samples = np.random.default_rng(seed).integers(0, len(array), size=(BOOTSTRAP, len(array)))
    low, high = np.percentile(array[samples].mean(axis=1), [2.5, 97.5])
    return Interval(float(array.mean()), float(low), float(high))


def aligned_nlls(backend: Backend, examples: Sequence[Example]) -> list[float]:
    """The NLL per token of each example's answer under an aligned (instruct) model, the query in its own chat
    template: how likely the model tuned by others finds the answers you chose."""
    from untuned.backends import ChatTemplated

    if not isinstance(backend, ChatTemplated) or backend.template_text() is None:
        raise UntunedError(f"{backend.name} has no chat template: --aligned takes an instruct model with one")
    found = []
    with scoring(backend) as logprobs:
        for example in examples:
            context = backend.tokenize_prompt(backend.chat_prompt([{"role": "user", "content": example.query}]))
            found.append(float(-logprobs(context + backend.tokenize(example.answer), len(context)).mean()))
    return found
