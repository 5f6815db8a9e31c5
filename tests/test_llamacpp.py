"""The llama.cpp backend on the real bundled gemma-3-270m base model."""

from __future__ import annotations

import numpy as np
import pytest

from untuned import Assistant, Sampling
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.errors import ContextOverflowError, ModelLoadError, ModelNotFoundError, PromptTooLongError
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


QUESTIONS = ["Name three primary colours.", "What is 12 times 12?", "Why is the sky blue?"]


def _answer(backend, prompt, question: str) -> str:
    return Assistant(backend, prompt, Sampling(max_tokens=32)).ask(question).text


@pytest.mark.slow
def test_answers_never_depend_on_what_the_cache_held_before(gemma, gemma_path):
    """Exact by construction (see untuned.backends.llamacpp.engine), so compared bit for bit with
    fresh models: first use, prefix kept, prefix evicted by other prompt sets and evaluated again,
    after scoring, and on the session's shared model whatever earlier tests did with it."""
    helpful, safe, one_shot = load_prompt("helpful"), load_prompt("safe"), load_prompt("one-shot")
    fresh = {}
    for question in QUESTIONS:
        backend = LlamaCppBackend(gemma_path, n_ctx=4096)
        fresh[question] = _answer(backend, helpful, question)
        backend.close()
    assert len(set(fresh.values())) == len(QUESTIONS) and all(fresh.values())

    backend = LlamaCppBackend(gemma_path, n_ctx=4096, prefixes=2)
    try:
        assert [_answer(backend, helpful, q) for q in QUESTIONS] == list(fresh.values())  # first use, then kept
        _answer(backend, safe, QUESTIONS[0])
        _answer(backend, one_shot, QUESTIONS[1])  # a third prompt set evicts helpful's prefix
        backend.score(backend.tokenize("scoring runs in a slot of the same context", add_special=True))
        assert [_answer(backend, helpful, q) for q in reversed(QUESTIONS)] == list(reversed(fresh.values()))
        stats = backend.engine.stats()
        assert stats.prefix_misses == 4 and stats.prefix_hits == 4
    finally:
        backend.close()
    assert [_answer(gemma, helpful, q) for q in QUESTIONS] == list(fresh.values())


def _reference_scores(backend: LlamaCppBackend, ids: list[int]):
    """One forward pass per position, from an empty sequence each time: the original analysis' way."""
    logprobs, ranks = [], []
    with backend.engine.exclusive() as (ctx, batch, seq):
        for i in range(1, len(ids)):
            ctx.clear(seq)
            batch.clear()
            batch.add(ids[:i], 0, seq, np.arange(i) == i - 1)
            ctx.decode(batch)
            row = ctx.logits(1)[0].astype(np.float64)
            log_norm = np.log(np.exp(row - row.max()).sum()) + row.max()
            logprobs.append(row[ids[i]] - log_norm)
            ranks.append(int((row > row[ids[i]]).sum()) + 1)
    return np.array(logprobs), np.array(ranks)


@pytest.mark.slow
def test_score_matches_per_position_reference(gemma):
    """One pass over all positions and a pass per position are different batch shapes, which
    llama.cpp's quantized kernels legitimately round differently (differently on AVX2 and AVX-512
    CPUs too). So what is compared is what is guaranteed: probabilities within a small tolerance,
    and the unshifted / marginal / shifted category wherever the rank is not at a near-tie."""
    from untuned.shift.records import category

    ids = gemma.tokenize("The capital of France is Paris. It is known for the Eiffel Tower.", add_special=True)
    scores = gemma.score(ids, start=1, top_k=5)
    ref_logprobs, ref_ranks = _reference_scores(gemma, ids)
    assert scores.token_ids.tolist() == ids[1:]
    diff = np.abs(scores.logprobs - ref_logprobs)
    assert np.median(diff) < 0.05 and diff.max() < 0.5, diff
    agree = [category(a) == category(b) for a, b in zip(scores.ranks, ref_ranks)]
    assert np.mean(agree) >= 0.85, list(zip(scores.ranks, ref_ranks))
    assert scores.top_ids.shape == (len(ids) - 1, 5)
    assert np.all(np.diff(scores.top_logprobs, axis=1) <= 0)
    rank_one = scores.ranks == 1
    np.testing.assert_array_equal(scores.top_ids[rank_one, 0], scores.token_ids[rank_one])
    later = gemma.score(ids, start=5)
    np.testing.assert_allclose(later.logprobs, scores.logprobs[4:], atol=1e-3)


def test_context_overflow_says_by_how_much(gemma_path):
    backend = LlamaCppBackend(gemma_path, n_ctx=256)
    try:
        with pytest.raises(PromptTooLongError) as early:  # the prompt set alone cannot fit: refused at load, with numbers
            Assistant(backend, load_prompt("helpful"))
        assert early.value.context_length == 256 and early.value.prefix_tokens > 256
        with pytest.raises(ContextOverflowError) as info:
            Assistant(backend, load_prompt("zero-shot"), Sampling(max_tokens=8)).ask("Hello? " * 120)
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


def _together(backend: LlamaCppBackend, questions: list[str], sampling: Sampling) -> list[str]:
    """Answer ``questions`` in one batch: all are queued while the engine is paused, then released."""
    prompt = load_prompt("helpful")
    with backend.engine.paused():
        streams = []
        for question in questions:
            conversation = Assistant(backend, prompt).conversation()
            conversation.add_user(question)
            streams.append(backend.stream(conversation.render(), sampling))
            next(streams[-1])  # queues the request
    return ["".join(chunk.text for chunk in stream) for stream in streams]


@pytest.mark.slow
def test_requests_decoded_together_never_see_each_others_content(gemma, gemma_path):
    """Two requests whose prompts differ by one token, each run beside the same first request: the first
    one's answer is the same bit for bit (the batch has the same shape; its attention reads only its own
    KV stream)."""
    first, second, other = "Name three primary colours.", "What is 12 times 12?", "What is 13 times 12?"
    one, two = gemma.tokenize(second), gemma.tokenize(other)
    assert len(one) == len(two) and sum(a != b for a, b in zip(one, two)) == 1
    backend = LlamaCppBackend(gemma_path, n_ctx=2048, slots=2)
    try:
        sampling = Sampling(max_tokens=32)
        with_second = _together(backend, [first, second], sampling)
        with_other = _together(backend, [first, other], sampling)
        assert with_second[0] == with_other[0] and with_second[1] != with_other[1]
        assert backend.stats().largest_batch == 2
    finally:
        backend.close()


@pytest.mark.slow
def test_greedy_here_chooses_what_llama_cpp_s_sampler_would(gemma, monkeypatch):
    """Greedy decoding skips llama.cpp's sampler chain (a copy of the 262k-token vocabulary per token)
    and applies the repetition penalty itself: the same tokens, with and without a strong penalty."""
    from untuned.backends.llamacpp.engine import LlamaEngine

    bot = Assistant(gemma, load_prompt("helpful"))
    for penalty in (1.1, 1.5):
        sampling = Sampling(max_tokens=40, repetition_penalty=penalty)
        here = [bot.ask(q, sampling=sampling).text for q in QUESTIONS]
        monkeypatch.setattr(LlamaEngine, "greedy_here", False)
        native = [bot.ask(q, sampling=sampling).text for q in QUESTIONS]
        monkeypatch.setattr(LlamaEngine, "greedy_here", True)
        assert here == native


@pytest.mark.slow
def test_a_request_moved_to_a_lower_slot_computes_what_it_would_have(gemma_path):
    """Running requests are kept in the lowest slots: when a request in slot 0 ends, the one in slot 1
    moves down with a copy of its KV stream. The moved answer equals the one that never moved (the
    batch has the same shape in both runs; only the slots differ)."""
    from untuned.backends.llamacpp.engine import LlamaEngine

    backend = LlamaCppBackend(gemma_path, n_ctx=2048, slots=2)
    prompt = load_prompt("helpful")

    def both(order: list[tuple[str, int]]) -> dict[str, str]:
        with backend.engine.paused():
            streams = {}
            for question, tokens in order:
                conversation = Assistant(backend, prompt).conversation()
                conversation.add_user(question)
                streams[question] = backend.stream(conversation.render(), Sampling(max_tokens=tokens))
                next(streams[question])
        return {question: "".join(chunk.text for chunk in stream) for question, stream in streams.items()}

    moves = []
    original = LlamaEngine._compact

    def counted(engine):
        before = [slot.request for slot in engine._slots]
        original(engine)
        moves.append(before != [slot.request for slot in engine._slots])

    try:
        LlamaEngine._compact = counted
        short, long = ("Say hi.", 3), ("Write a long story about a dragon.", 40)
        moved = both([short, long])  # the long one starts in slot 1 and moves to slot 0
        assert any(moves)
        moves.clear()
        unmoved = both([long, short])  # the long one starts in slot 0
        assert not any(moves)
        assert moved == unmoved and len(moved[long[0]]) > 50
    finally:
        LlamaEngine._compact = original
        backend.close()


EXIT_SCRIPT = """
import atexit, sys, threading

def report():  # registered before untuned's own hook, so it runs after it (atexit is last in, first out)
    alive = [t.name for t in threading.enumerate() if t.name.startswith("untuned-")]
    sys.stdout.write(f"engine threads at exit: {alive}\\n")

atexit.register(report)
from untuned import Assistant, Sampling, load_backend
from untuned.prompt import load_prompt

bot = Assistant(load_backend(sys.argv[1]), load_prompt("helpful"), Sampling(max_tokens=4))
sys.stdout.write(bot.ask("Hi").text + "\\n")
"""


def test_an_engine_left_open_is_stopped_before_the_interpreter_exits(gemma_path):
    """A script that never closes its model: its engine thread is stopped by untuned's exit hook, before
    Python tears itself down, and the process exits cleanly (a crash at exit was seen once in CI)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(gemma_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "engine threads at exit: []"
