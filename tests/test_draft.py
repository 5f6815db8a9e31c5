"""Speculative decoding (``--draft``): the model's guesses checked in one batch give its greedy answers unchanged.

The premise is llama.cpp's, so it is tested on llama.cpp itself first: with one thread and flash attention, the
rows of one sequence decoded together equal the same tokens decoded one at a time, bit for bit. Where that holds,
drafting must not change a single answer; that is what the answer tests check, on URIAL prompts whose answers run
past gemma's 512-token sliding window. (With several threads llama.cpp splits one row's attention over its
threads, a different order of sums than for several rows, so a near-tie may go the other way: docs/desktop.md.)
"""

from __future__ import annotations

import numpy as np
import pytest

from untuned.assistant import Assistant
from untuned.backends import Sampling
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.backends.llamacpp.draft import PromptLookup
from untuned.backends.llamacpp.native import Batch, Context, NativeModel
from untuned.errors import ModelLoadError
from untuned.prompt import load_prompt

QUERIES = [
    "Write a Python function that checks whether a sentence is a palindrome.",
    "How do I make a cup of green tea?",
    "List three uses of a paperclip.",
]
GREEDY = Sampling(temperature=0, max_tokens=96)


def answers(backend, sampling: Sampling = GREEDY) -> list[str]:
    assistant = Assistant(backend, load_prompt("helpful"), sampling)
    return [assistant.ask(query).text for query in QUERIES]


@pytest.fixture(scope="module")
def plain_answers(gemma_path):
    backend = LlamaCppBackend(gemma_path, threads=1, flash_attn="on", prefix_cache=False)
    try:
        yield answers(backend)
    finally:
        backend.close()


@pytest.mark.slow
def test_llama_cpp_decodes_rows_of_one_sequence_as_it_decodes_them_alone(gemma_path):
    """The oracle: 7 tokens decoded in one batch after a history of 40 to 900 tokens (past the sliding window)
    give exactly the logits they give decoded one by one (one thread, flash attention)."""
    model = NativeModel(gemma_path)
    ids = model.tokenize("The quick brown fox jumps over the lazy dog. " * 120, add_special=True)
    try:
        for history in (40, 300, 600, 900):
            rows = []
            for together in (False, True):
                ctx = Context(model, n_ctx_seq=2048, n_seq=1, n_batch=512, threads=1, flash_attn="on")
                batch = Batch(model.lib, 512)
                for begin in range(0, history, 512):
                    batch.clear()
                    batch.add(ids[begin : min(begin + 512, history)], begin, 0, False)
                    ctx.decode(batch)
                extra = ids[history : history + 7]
                if together:
                    batch.clear()
                    batch.add(extra, history, 0, True)
                    ctx.decode(batch)
                    rows.append(np.array([ctx.logits_row(i) for i in range(7)]))
                else:
                    alone = []
                    for offset, token in enumerate(extra):
                        batch.clear()
                        batch.add([token], history + offset, 0, True)
                        ctx.decode(batch)
                        alone.append(ctx.logits_row(0).copy())
                    rows.append(np.array(alone))
                ctx.close()
            assert np.array_equal(rows[0], rows[1]), history
    finally:
        model.close()


@pytest.mark.slow
def test_prompt_lookup_gives_the_same_greedy_answers(gemma_path, plain_answers):
    backend = LlamaCppBackend(gemma_path, threads=1, flash_attn="on", prefix_cache=False, draft="prompt-lookup")
    try:
        assert answers(backend) == plain_answers
        stats = backend.stats()
        assert 0 < stats.draft_accepted < stats.draft_proposed  # it guessed, some guesses held, some did not
    finally:
        backend.close()


@pytest.mark.slow
def test_the_bundled_model_drafting_for_itself_gives_the_same_answers(gemma_path, plain_answers):
    """A draft model of the same vocabulary (here the model itself: its guesses are its own greedy choices, the
    repetition penalty apart) through its own context, brought up to date with each request's tokens."""
    backend = LlamaCppBackend(gemma_path, threads=1, flash_attn="on", prefix_cache=False, draft="default")
    try:
        assert answers(backend) == plain_answers
        stats = backend.stats()
        assert stats.draft_accepted > 0.6 * stats.draft_proposed
    finally:
        backend.close()


@pytest.mark.slow
def test_sampled_and_constrained_requests_are_not_drafted(gemma_path):
    backend = LlamaCppBackend(gemma_path, threads=1, prefix_cache=False, draft="prompt-lookup")
    try:
        answers(backend, Sampling(temperature=0.8, seed=3, max_tokens=24))
        schema = '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}'
        answers(backend, Sampling(temperature=0, max_tokens=24, json_schema=schema))
        stats = backend.stats()
        assert stats.generated_tokens > 0 and stats.draft_proposed == 0
    finally:
        backend.close()


def test_a_draft_model_of_another_tokenizer_is_refused_by_name(gemma_path, smollm_path):
    with pytest.raises(ModelLoadError, match=rf"--draft {smollm_path.name}: its vocabulary has \d+ tokens .*tokenizer"):
        LlamaCppBackend(gemma_path, prefix_cache=False, draft=str(smollm_path))


@pytest.mark.parametrize(
    ("history", "limit", "guesses"),
    [
        ([5, 1, 2, 3, 4, 1, 2], 3, [3, 4, 1]),  # the last two tokens seen before: what followed them
        ([1, 2, 9, 1, 2, 8, 1, 2], 2, [8, 1]),  # the latest earlier occurrence wins
        ([7, 1, 2, 3, 6, 1, 2, 3], 5, [6, 1, 2, 3]),  # the longest match (three tokens), cut where history ends
        ([1, 2, 3, 4], 4, []),  # nothing repeats
        ([3, 3], 4, []),  # one repeated token is not a match (two at least)
        ([1, 2, 1, 2], 0, []),
    ],
)
def test_prompt_lookup_continues_the_latest_earlier_occurrence(history, limit, guesses):
    assert PromptLookup().propose(0, history, limit) == guesses


@pytest.mark.slow
def test_serve_with_prompt_lookup_answers_through_openai_and_counts_the_guesses() -> None:
    """`untuned serve --draft prompt-lookup`: the option reaches the engine's process; /health and /metrics count
    the guesses made and confirmed; a greedy answer comes back through the real openai client."""
    import openai
    from helpers import http
    from helpers.servers import untuned_server

    with untuned_server("--draft", "prompt-lookup") as root:
        client = openai.OpenAI(base_url=f"{root}/v1", api_key="none", timeout=120)
        reply = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": QUERIES[0]}], max_tokens=64, temperature=0
        )
        engine = http.get(f"{root}/health").json()["engine"]
        metrics = http.get(f"{root}/metrics").text
    assert reply.choices[0].message.content
    assert 0 < engine["draft_accepted"] <= engine["draft_proposed"]
    assert f"untuned_engine_draft_proposed_total {engine['draft_proposed']}" in metrics
