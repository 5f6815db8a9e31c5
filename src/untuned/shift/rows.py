"""Arithmetic on the two sides' rows of log-probabilities: the aligned side's scores kept per position,
two chunked passes zipped, and the paper's analysis' KL@10."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from untuned.backends import top_k_indices


class AlignedSide(NamedTuple):
    """The aligned side's scores at a run of positions: the ranked token, its log-probability, rank and the
    side's top-k there, and the rank of the answer's own token (what a sampler drawing from that side took)."""

    wanted: np.ndarray
    logprob: np.ndarray
    rank: np.ndarray
    top: np.ndarray
    top_logprobs: np.ndarray
    own_rank: np.ndarray

    def take(self, index: np.ndarray) -> AlignedSide:
        return AlignedSide(*(column[index] for column in self))


class BaseSide(NamedTuple):
    """The base side's scores at a run of positions: the ranked token's log-probability, rank (and with ties
    counted against it), the base's top-k, and the rank of the answer's own token."""

    logprob: np.ndarray
    rank: np.ndarray
    top: np.ndarray
    top_logprobs: np.ndarray
    rank_worst: np.ndarray
    own_rank: np.ndarray


def own_tokens(index: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """The answer's token at each position (its last one past the end, where the end position is scored)."""
    return answer[np.minimum(index, len(answer) - 1)] if len(answer) else np.zeros(len(index), dtype=int)


def zip_rows(
    first: Iterator[tuple[np.ndarray, np.ndarray]], second: Iterator[tuple[np.ndarray, np.ndarray]]
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pair two (index, rows) streams that cover the same indices in chunks of any sizes."""
    a_index, a_rows = np.empty(0, dtype=int), None
    b_index, b_rows = np.empty(0, dtype=int), None
    while True:
        if not len(a_index):
            step = next(first, None)
            if step is None:
                return
            a_index, a_rows = step
        if not len(b_index):
            step = next(second, None)
            if step is None:
                return
            b_index, b_rows = step
        n = min(len(a_index), len(b_index))
        if not np.array_equal(a_index[:n], b_index[:n]):
            raise RuntimeError("the two passes disagree on positions")  # a bug, not bad input
        yield a_index[:n], a_rows[:n], b_rows[:n]
        a_index, a_rows, b_index, b_rows = a_index[n:], a_rows[n:], b_index[n:], b_rows[n:]


ALIGNTDS_TOP = 30  # the logits AlignTDS keeps per position (logit_analysis.py --top_k)
ALIGNTDS_KL_TOP = 10  # its KL@10


def _first_of_each(keys: list, probs: list[float]) -> dict:
    """``keys`` to their probability at their first occurrence (a Python list's ``index`` finds that one)."""
    found: dict = {}
    for key, prob in zip(keys, probs):
        found.setdefault(key, prob)
    return found


def aligntds_kl_top10(base_rows: np.ndarray, aligned_rows: np.ndarray, text: Callable[[int], str] | None = None) -> np.ndarray:
    """The paper's analysis' KL@10 per row (compute_dist_diff.py, metric "KL", top_k 10): each side's top 30
    renormalised (a softmax over those 30), then the sum over the tokens in both sides' top-10 lists of
    p_base · log(p_base / p_aligned): KL(base‖aligned), on that support only. With ``text`` the tokens are
    told apart by their decoded text, as AlignTDS keeps them, each text at its first occurrence in a list."""
    values = []
    base_top, aligned_top = top_k_indices(base_rows, ALIGNTDS_TOP), top_k_indices(aligned_rows, ALIGNTDS_TOP)
    key = text or (lambda token: token)
    for b_rows, a_rows, b_ids, a_ids in zip(base_rows, aligned_rows, base_top, aligned_top):
        b = np.exp(b_rows[b_ids] - b_rows[b_ids].max())
        a = np.exp(a_rows[a_ids] - a_rows[a_ids].max())
        top_b, top_a = b_ids[:ALIGNTDS_KL_TOP].tolist(), a_ids[:ALIGNTDS_KL_TOP].tolist()
        b_prob = _first_of_each([key(t) for t in top_b], (b / b.sum())[:ALIGNTDS_KL_TOP].tolist())
        a_prob = _first_of_each([key(t) for t in top_a], (a / a.sum())[:ALIGNTDS_KL_TOP].tolist())
        values.append(sum(p * np.log(p / a_prob[t]) for t, p in b_prob.items() if t in a_prob and p > 0 and a_prob[t] > 0))
    return np.asarray(values, dtype=np.float64)


def text_ranks(base_rows: np.ndarray, wanted: np.ndarray, id_ranks: np.ndarray, text: Callable[[int], str]) -> np.ndarray:
    """AlignTDS's rank of each row's wanted token (its "top_rank" + 1): the first of the base's top 10 whose
    decoded text equals the wanted token's text, so that ``the`` agrees with ``▁the``; past the top 10, the id's
    own rank (which is then past 10 too: an id in the top 10 would have matched by its own text)."""
    tops = top_k_indices(base_rows, ALIGNTDS_KL_TOP)
    ranks = np.asarray(id_ranks).copy()
    for row, (token, top) in enumerate(zip(wanted.tolist(), tops.tolist())):
        texts = [text(t) for t in top]
        if text(token) in texts:
            ranks[row] = texts.index(text(token)) + 1
    return ranks
