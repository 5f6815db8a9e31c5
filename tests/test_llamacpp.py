"""The llama.cpp backend on the real bundled gemma-3-270m base model."""

from __future__ import annotations

import numpy as np
import pytest

from untuned import Assistant, Sampling
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.conversation import render_prefix
from untuned.errors import ContextOverflowError, ModelLoadError, ModelNotFoundError
from untuned.prompt import load_prompt

GREEDY = Sampling(max_tokens=48)


@pytest.fixture(scope="module")
def bot(gemma):
    return Assistant(gemma, load_prompt("helpful"), GREEDY)


def test_streams_paris_and_stops_cleanly(bot):
    completion = bot.ask("What is the capital of France?")
    chunks = list(completion)
    assert len(chunks) > 1, "the answer should arrive in several chunks"
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"
    assert "````" not in completion.text and "# Query" not in completion.text
    assert completion.prompt_tokens and completion.prompt_tokens > 500
    assert 0 < completion.completion_tokens <= 48


def test_length_finish(bot):
    completion = bot.ask("Write a long essay about the history of Rome.", sampling=Sampling(max_tokens=5))
    completion.text
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 5


def test_second_turn_uses_the_first(bot):
    chat = bot.chat()
    chat.send("I have a dog called Biscuit.").text
    second = chat.send("What is my dog called?").text
    assert "Biscuit" in second
    assert "Biscuit" not in bot.ask("What is my dog called?").text
    assert [t.role for t in chat.conversation.turns] == ["user", "assistant", "user", "assistant"]


def test_prefix_reuse_gives_the_same_answers(gemma, gemma_path):
    """Answers with the cached prefix (kept, restored from a snapshot, or after a switch) equal fresh ones."""
    helpful, safe = load_prompt("helpful"), load_prompt("safe")
    questions = ["Name three primary colours.", "What is 12 times 12?"]

    def answer(backend, prompt, question):
        return Assistant(backend, prompt, Sampling(max_tokens=24)).ask(question).text

    fresh = {}
    for question in questions:
        backend = LlamaCppBackend(gemma_path, n_ctx=4096)
        fresh[question] = answer(backend, helpful, question)
        backend.close()

    assert answer(gemma, helpful, questions[0]) == fresh[questions[0]]
    assert answer(gemma, helpful, questions[1]) == fresh[questions[1]]  # prefix kept in the cache
    answer(gemma, safe, questions[0])  # another prefix replaces the cache
    gemma.score(gemma.tokenize("scoring clobbers the cache too", add_special=True))
    assert answer(gemma, helpful, questions[0]) == fresh[questions[0]]  # restored from its snapshot
    key = tuple(gemma.tokenize(render_prefix(helpful), add_special=True))
    assert key in gemma._snapshots


def _reference_scores(backend: LlamaCppBackend, ids: list[int]):
    """One forward pass per position, no cache reuse: the original analysis' way."""
    llm = backend.llm
    logprobs, ranks = [], []
    for i in range(1, len(ids)):
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(ids[:i])
        row = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(1, backend.vocab_size))[0].astype(np.float64)
        log_norm = np.log(np.exp(row - row.max()).sum()) + row.max()
        logprobs.append(row[ids[i]] - log_norm)
        ranks.append(int((row > row[ids[i]]).sum()) + 1)
    return np.array(logprobs), np.array(ranks)


def test_score_matches_per_position_reference(gemma):
    ids = gemma.tokenize("The capital of France is Paris. It is known for the Eiffel Tower.", add_special=True)
    scores = gemma.score(ids, start=1, top_k=5)
    ref_logprobs, ref_ranks = _reference_scores(gemma, ids)
    assert scores.token_ids.tolist() == ids[1:]
    # llama.cpp's quantized CPU kernels round slightly differently for different batch shapes,
    # so one pass and the per-position loop agree exactly at most positions and closely at all.
    diff = np.abs(scores.logprobs - ref_logprobs)
    same = diff < 1e-3
    assert same.mean() >= 0.6 and diff.max() < 0.25, diff
    np.testing.assert_array_equal(scores.ranks[same], ref_ranks[same])
    assert scores.top_ids.shape == (len(ids) - 1, 5)
    assert np.all(np.diff(scores.top_logprobs, axis=1) <= 0)
    rank_one = scores.ranks == 1
    np.testing.assert_array_equal(scores.top_ids[rank_one, 0], scores.token_ids[rank_one])
    later = gemma.score(ids, start=5)
    np.testing.assert_allclose(later.logprobs, scores.logprobs[4:], atol=1e-4)


def test_context_overflow_says_by_how_much(gemma_path):
    backend = LlamaCppBackend(gemma_path, n_ctx=256)
    try:
        with pytest.raises(ContextOverflowError) as info:
            Assistant(backend, load_prompt("helpful")).ask("Hello?")
        assert info.value.context_length == 256
        assert info.value.excess == info.value.prompt_tokens - 255
        assert f"{info.value.excess} tokens too many" in str(info.value)
    finally:
        backend.close()


def test_missing_and_corrupt_files(tmp_path, gemma_path):
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        LlamaCppBackend(tmp_path / "nope.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model" * 100)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        LlamaCppBackend(junk)
    truncated = tmp_path / "truncated.gguf"
    with gemma_path.open("rb") as source:
        truncated.write_bytes(source.read(1 << 20))
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        LlamaCppBackend(truncated)
