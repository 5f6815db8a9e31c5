"""The transformers backend: plumbing on a tiny random model built here, and (slow) the gemma GGUF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the transformers backend needs the [hf] extra")
transformers = pytest.importorskip("transformers")

from helpers.tiny import CORPUS, make_tiny_llama  # noqa: E402

from untuned import Assistant, LoadOptions, Sampling, load_backend  # noqa: E402
from untuned.backends.hf import TransformersBackend  # noqa: E402
from untuned.conversation import Conversation  # noqa: E402
from untuned.errors import ContextOverflowError, PromptTooLongError  # noqa: E402
from untuned.prompt import load_prompt  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> TransformersBackend:
    return load_backend(str(tiny_model_dir), LoadOptions(device="cpu"))


def test_folder_spec_picks_transformers(tiny, tiny_model_dir):
    assert isinstance(tiny, TransformersBackend)
    assert tiny.name == tiny_model_dir.name
    ids = tiny.tokenize("The capital of France is Paris.")
    assert tiny.detokenize(ids) == "The capital of France is Paris."
    assert tiny.tokenize("x", add_special=True)[0] == tiny.tokenizer.bos_token_id


def test_generation_is_reproducible_and_prefix_cache_is_exact(tiny):
    bot = Assistant(tiny, load_prompt("one-shot"), Sampling(max_tokens=12, temperature=0.8, seed=7))
    first = bot.ask("What is two plus two?")
    text = first.text
    # the limit was reached exactly when the answer says so
    assert first.completion_tokens >= 1 and (first.finish_reason == "length") == (first.completion_tokens == 12)
    assert bot.ask("What is two plus two?").text == text  # same seed, cached prefix
    tiny._prefix_cache.clear()
    assert bot.ask("What is two plus two?").text == text  # same seed, prefix recomputed


def test_greedy_matches_transformers_generate(tiny):
    """Our loop with the cached prefix picks the same tokens as model.generate on the full prompt."""
    bot = Assistant(tiny, load_prompt("one-shot"), Sampling(max_tokens=10, repetition_penalty=1.0))
    conversation = bot.conversation()
    conversation.add_user("Say something.")
    rendered = conversation.render()
    ours = []
    for piece in tiny.stream(rendered, bot.sampling):
        ours.append(piece)
    ids = tiny.tokenize(rendered.prefix, add_special=True) + tiny.tokenize(rendered.body)
    reference = tiny.model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[0, len(ids) :].tolist()
    expected = tiny.detokenize([t for t in reference if t != tiny.tokenizer.eos_token_id])
    assert "".join(p.text for p in ours) == expected


def test_score_matches_per_position_reference(tiny):
    ids = tiny.tokenize(" ".join(CORPUS) * 3, add_special=True)
    assert len(ids) > 70  # crosses a scoring chunk boundary
    scores = tiny.score(ids, start=1, top_k=3)
    logprobs, ranks = [], []
    with torch.no_grad():
        for i in range(1, len(ids)):
            row = tiny.model(torch.tensor([ids[:i]])).logits[0, -1].double()
            logprobs.append(float(torch.log_softmax(row, -1)[ids[i]]))
            ranks.append(int((row > row[ids[i]]).sum()) + 1)
    np.testing.assert_array_equal(scores.ranks, ranks)
    np.testing.assert_allclose(scores.logprobs, logprobs, atol=1e-5)


def test_context_overflow(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), LoadOptions(device="cpu", n_ctx=64))
    with pytest.raises(PromptTooLongError, match="more than the model's window of 64 tokens"):  # refused up front
        Assistant(backend, load_prompt("helpful"))
    from untuned.prompt import PromptSet

    bot = Assistant(backend, PromptSet(name="tiny", system="Be brief."), Sampling(max_tokens=4))
    with pytest.raises(ContextOverflowError, match="tokens too many"):  # a question too long for what is left
        bot.ask("Hello? " * 40)


@pytest.mark.slow
def _answers_together(backend, prompts, sampling) -> list[str]:
    """Answer ``prompts`` in one wave: all are queued while the engine is paused, then released."""
    with backend.engine.paused():
        streams = [backend.stream(prompt, sampling) for prompt in prompts]
        for stream in streams:
            next(stream)  # queues the request
    return ["".join(chunk.text for chunk in stream) for stream in streams]


def _rendered(questions: list[str], prompt_name: str = "one-shot"):
    prompt = load_prompt(prompt_name)
    rendered = []
    for question in questions:
        conversation = Conversation(prompt)
        conversation.add_user(question)
        rendered.append(conversation.render())
    return rendered


def test_batched_greedy_answers_equal_one_at_a_time(tiny_model_dir):
    """Bodies of different lengths in one wave (padding, part of the prefix fed again) give the same
    greedy tokens as each request alone, on the tiny float32 model; a second prefix waits for its wave."""
    backend = load_backend(str(tiny_model_dir), LoadOptions(device="cpu", parallel=4))
    sampling = Sampling(max_tokens=16)
    questions = ["Hi", "What is two plus two?", "The capital of France is Paris. " * 3, "Four."]
    prompts = _rendered(questions) + _rendered(["What is two plus two?"], "zero-shot")
    alone = ["".join(chunk.text for chunk in backend.stream(prompt, sampling)) for prompt in prompts]
    assert len(set(alone)) > 1
    assert _answers_together(backend, prompts, sampling) == alone
    stats = backend.stats()
    assert stats.requests == 10 and stats.busy_slots == 0 and stats.slots == 4 and stats.largest_batch == 4
    backend.close()


@pytest.mark.slow
def test_batched_greedy_answers_equal_one_at_a_time_on_gemma(gemma_path):
    """The bundled GGUF read by transformers, gemma-3 in float32 (sliding-window attention, URIAL prefix
    longer than the window): an Assistant's answer is right, and a wave of three answers, bodies of
    different lengths, equals the three answered one at a time."""
    backend = load_backend(str(gemma_path), LoadOptions(backend="transformers", device="cpu", n_ctx=2048, parallel=3))
    sampling = Sampling(max_tokens=24)
    prompts = _rendered(["What is the capital of France?", "Hi!", "Give me three tips for sleeping better at night."], "helpful")
    alone = ["".join(chunk.text for chunk in backend.stream(prompt, sampling)) for prompt in prompts]
    asked = Assistant(backend, load_prompt("helpful"), sampling).ask("What is the capital of France?").text
    assert "Paris" in asked and alone[0].strip().startswith(asked)  # the raw stream runs past the stop text
    assert _answers_together(backend, prompts, sampling) == alone
    assert backend.stats().largest_batch == 3
    backend.close()


def test_structured_output_holds_the_tiny_model_to_the_schema_and_the_enum(tiny):
    """llguidance's mask on the transformers backend too: a random 2-layer model, which left alone writes noise,
    answers with JSON its schema allows, greedy and sampled; a schema no output can match is refused up front."""
    import json

    from untuned.backends import SchemaConstrained
    from untuned.conversation import RenderedPrompt
    from untuned.errors import ConstraintError

    assert isinstance(tiny, SchemaConstrained)
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "n": {"type": "integer"}},
        "required": ["answer", "n"],
    }
    for temperature in (0.0, 1e-44, 0.9):
        sampling = Sampling(max_tokens=40, temperature=temperature, seed=3, json_schema=json.dumps(schema))
        chunks = list(tiny.stream(RenderedPrompt(prefix="", body="The capital of France is"), sampling))
        text = "".join(c.text for c in chunks)
        if chunks[-1].finish == "stop":
            found = json.loads(text)
            assert found["answer"] in ("yes", "no") and isinstance(found["n"], int), text
        else:  # cut by max_tokens: still a prefix the schema allows
            assert text.startswith('{"answer": "'), text
    with pytest.raises(ConstraintError, match="Unimplemented keys"):
        tiny.check_constraint(json_schema=json.dumps({"type": "array", "uniqueItems": True}))
