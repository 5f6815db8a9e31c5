"""``untuned curve``: the held-out answer is never in its own prompt, a scored NLL equals a direct teacher-forced
computation on the same ids, and on the default model a tiny set of answers in one unusual style becomes more
likely with K examples in the prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FIXTURES
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from untuned.cli import app
from untuned.curve import measure, plan, prompt_ids, scoring
from untuned.errors import UntunedError
from untuned.prompt import Example, PromptSet, load_prompt

OCTOPUS = FIXTURES / "octopus.urial"


@given(
    n=st.integers(2, 30),
    ks=st.lists(st.integers(0, 29), min_size=1, max_size=6),
    orders=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
@example(n=2, ks=[0, 1], orders=1, seed=0)  # the smallest curve: one example shown, one held out
@example(n=24, ks=[0, 1, 2, 4, 8, 16, 23], orders=5, seed=7)
def test_the_held_out_answer_is_never_in_its_own_prompt(n, ks, orders, seed):
    if max(ks) > n - 1:
        with pytest.raises(UntunedError, match="one held out"):
            plan(n, ks, orders, seed)
        return
    cells = plan(n, ks, orders, seed)
    assert len(cells) == orders * n * len(set(ks))
    for cell in cells:
        assert cell.item not in cell.context and len(cell.context) == cell.k == len(set(cell.context))
    for order in range(orders):
        for item in range(n):
            chain = [c.context for c in cells if (c.order, c.item) == (order, item)]
            assert all(longer[: len(shorter)] == shorter for shorter, longer in zip(chain, chain[1:]))  # each extends


def answers_of(fixture_data, n: int = 24) -> PromptSet:
    """The first ``n`` GPT-4 answers of the suite's cut of JUST-EVAL, each cut to its first 60 words (as the
    curve's benchmark takes them): K = 16 of them is some 2,000 tokens."""
    rows = [json.loads(line) for line in (fixture_data / "reference_outputs" / "gpt-4-0613.jsonl").read_text().splitlines()[:n]]
    chosen = tuple(Example(query=r["instruction"].strip(), answer=" ".join(r["output"].split()[:60])) for r in rows)
    return PromptSet("gpt-4", load_prompt("helpful").system, chosen)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gemma", "smollm"])
def test_a_scored_nll_equals_a_direct_teacher_forced_pass(model, gemma, smollm_path, fixture_data):
    """The scoring session reuses the previous prompt's evaluated tokens (from the chunk their common prefix ends
    in; on gemma, whose sliding-window layers cannot go back, only where a prompt extends the last); its
    log-probabilities equal one fresh teacher-forced pass over the same ids, to the bit, for prompts of up to
    some 2,000 tokens scored in the curve's order (past a chunk, and past gemma's window and its cache)."""
    from untuned.backends.llamacpp import LlamaCppBackend

    backend = gemma if model == "gemma" else LlamaCppBackend(smollm_path, n_ctx=4096)
    prompt = answers_of(fixture_data)
    examples = list(prompt.examples)
    ks, items = ([0, 1, 2, 4, 8, 16], 2) if model == "gemma" else ([0, 4, 16], 1)  # gemma: enough to go back past its window
    cells = [c for c in plan(len(examples), ks, 1, seed=0) if c.item < items]
    scored = []
    with scoring(backend) as logprobs:  # holds a slot of the engine: the direct passes come after
        for cell in cells:
            ids, start = prompt_ids(backend, prompt, examples, cell)
            scored.append((ids, start, logprobs(ids, start)))
    try:
        for ids, start, reused in scored:
            direct = backend.score(ids, start=start, top_k=1).logprobs
            assert len(reused) == len(ids) - start
            np.testing.assert_array_equal(reused, direct)
    finally:
        if backend is not gemma:
            backend.close()
    assert max(len(ids) for ids, _, _ in scored) > 1500


@pytest.mark.slow
def test_answers_in_one_style_become_likelier_with_examples(gemma):
    curve = measure(gemma, load_prompt(OCTOPUS), [0, 4], orders=1, seed=1, reference=load_prompt("helpful"))
    zero, four = curve.by_k[0], curve.by_k[4]
    assert four.high < zero.low  # the intervals do not overlap
    assert four.mean < curve.reference.mean  # closer than the generic bundled examples bring it
    assert curve.fit is None and "3 or more K above 0" in curve.fit_problem


@pytest.mark.slow
def test_cli_curve_writes_its_records_and_refuses_a_k_too_large(tmp_path, smollm_path):
    refused = CliRunner().invoke(app, ["curve", str(OCTOPUS), "--k", "0,12", "--out", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "K = 12 needs 13 examples" in refused.output and not (tmp_path / "no").exists()
    args = ["curve", str(OCTOPUS), "--k", "0,1,3", "--orders", "1", "--reference", "", "--out", str(tmp_path / "c")]
    args += ["--aligned", str(smollm_path)]  # an instruct model's own likelihood of the answers, beside
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert set(summary["by_k"]) == {"0", "1", "3"} and summary["settings"]["orders"] == 1
    assert summary["fit"] is not None or summary["fit_problem"]
    points = [json.loads(line) for line in (tmp_path / "c" / "points.jsonl").read_text().splitlines()]
    assert len(points) == 12 * 3 and all(p["item"] not in p["context"] for p in points)
    assert (tmp_path / "c" / "curve.png").stat().st_size > 1000
    assert "fit: NLL(K)" in result.output or "no fit:" in result.output
    assert summary["aligned"]["model"] and summary["aligned"]["low"] <= summary["aligned"]["mean"] <= summary["aligned"]["high"]
    assert "aligned: " in result.output
