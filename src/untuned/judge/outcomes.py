"""The outcome of a pairwise verdict asked in both answer orders: the one place its rules live.

Two rules, each under its own name, because the references disagree:

- **untuned's rule** (AlpacaEval's preference): each order gives the first answer 2 points for a win,
  1.5 for a tie, 1 for a loss; the mean is the preference (AlpacaEval's encoding), and the outcome follows
  it as AlpacaEval counts wins: above 1.5 a win, below a loss, exactly 1.5 a tie. A win in one order and a
  tie in the other is a win (1.75); a win for each side is a tie (1.5). Untuned's pairwise tables and win
  rates use it.
- **FastChat's rule** (``show_result.display_result_pairwise``): a win only when both orders name the same
  winner; any disagreement, or a tie in either order, is a tie. Every number called MT-bench pairwise uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

POINTS = {"A": 2.0, "B": 1.0, "tie": 1.5}


def combine_orders(winners: Sequence[str]) -> tuple[str, float]:
    """untuned's rule: the outcome (A, B or tie, from the first answer's side) and the preference of the
    winners of each order."""
    preference = sum(POINTS[w] for w in winners) / len(winners)
    return ("A" if preference > 1.5 else "B" if preference < 1.5 else "tie"), preference


def fastchat_outcome(winners: Sequence[str]) -> str:
    """FastChat's rule: A or B when every order names it, else a tie."""
    first = winners[0]
    return first if first != "tie" and all(w == first for w in winners) else "tie"
