"""Structured output on the default model (issue 35): llguidance's mask, which the engine now uses, beside
llama.cpp's GBNF grammar sampler, which it used before, on the same schemas, side by side in one run.

1. Mask time per token: for each schema, the tokens of a valid answer are fed one by one; at each step the
   allowed set over gemma's 262,144-token vocabulary is computed (llguidance: ``Matcher.allowed``; GBNF:
   llama.cpp's grammar sampler applied to every token's logit, as a greedy step that must filter the whole
   vocabulary does). Median microseconds per step.
2. Decoding: greedy answers of up to ``max_tokens`` to four questions through the engine, plain (to
   max_tokens) and with a schema (llguidance), tokens per second after the first token (the prompt's
   evaluation left out). GBNF no longer runs in the engine, so it has no row here.

Run: .venv/bin/python bench/structured_output.py
"""

from __future__ import annotations

import ctypes
import json
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from smoke import sized

from untuned import Sampling
from untuned.backends import default_gguf_path
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.backends.llamacpp.native import NativeModel
from untuned.backends.llamacpp.sampling import TOKEN_DATA, llguidance_tokenizer
from untuned.constraint import Constrained, Constraints
from untuned.conversation import RenderedPrompt

SCHEMAS = {
    "object, 2 fields": (
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "people": {"type": "integer"}},
            "required": ["city", "people"],
        },
        '{"city": "Paris", "people": 2148000}',
    ),
    "string maxLength 1000": ({"type": "string", "maxLength": 1000}, '"' + "a long answer, " * 20 + '"'),
    "enum of 2,000": ({"enum": [f"option{i}" for i in range(2000)]}, '"option1999"'),
}
QUESTIONS = ["Describe Paris.", "Name a planet.", "A recipe for tea.", "Where is Peru?"][: sized(4, 1)]


def llguidance_steps(constraints: Constraints, schema: dict, tokens: list[int]) -> list[float]:
    matcher = constraints.matcher(Constrained("json_schema", json.dumps(schema)))
    times = []
    for token in tokens:
        started = time.perf_counter()
        allowed = matcher.allowed()
        times.append(time.perf_counter() - started)
        assert allowed[token]
        matcher.accept(token)
    return times


def gbnf_steps(model: NativeModel, schema: dict, tokens: list[int]) -> list[float]:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    lib = model.lib
    sampler = lib.llama_sampler_init_grammar(model.vocab, json_schema_to_gbnf(json.dumps(schema)).encode(), b"root")
    candidates = np.empty(model.n_vocab, dtype=TOKEN_DATA)
    times = []
    try:
        for token in tokens:
            candidates["id"], candidates["logit"], candidates["p"] = np.arange(model.n_vocab), 0.0, 0.0
            array = lib.llama_token_data_array(candidates.ctypes.data_as(lib.llama_token_data_p), model.n_vocab, -1, False)
            started = time.perf_counter()
            lib.llama_sampler_apply(sampler, ctypes.byref(array))
            times.append(time.perf_counter() - started)
            assert np.isfinite(candidates["logit"][token])
            lib.llama_sampler_accept(sampler, token)
    finally:
        lib.llama_sampler_free(sampler)
    return times


def end_to_end(backend: LlamaCppBackend, schema: dict | None, max_tokens: int) -> tuple[float, int]:
    """Decoding speed (tokens after the first, over the time after the first: the prompt's evaluation left out,
    since answers of different lengths would weigh it differently) and the tokens made."""
    made, seconds = 0, 0.0
    for question in QUESTIONS:
        sampling = Sampling(max_tokens=max_tokens, ignore_eos=schema is None, json_schema=json.dumps(schema) if schema else None)
        first = None
        for chunk in backend.stream(RenderedPrompt(prefix="", body=f"Q: {question}\nA (JSON):"), sampling):
            if chunk.tokens and first is None:
                first = time.perf_counter()
            elif chunk.tokens:
                made += chunk.tokens
        seconds += time.perf_counter() - first if first is not None else 0.0
    return made / seconds if seconds else 0.0, made


def main() -> None:
    path = Path(default_gguf_path())
    model = NativeModel(path)
    table = Table("schema", "steps", "llguidance µs/step", "GBNF µs/step", "GBNF / llguidance", title="mask per token, median")
    try:
        constraints = Constraints(lambda: llguidance_tokenizer(model), model.n_vocab)
        started = time.perf_counter()
        constraints.tokenizer
        setup = time.perf_counter() - started
        for name, (schema, answer) in SCHEMAS.items():
            tokens = model.tokenize(answer, add_special=False)
            ours = statistics.median(llguidance_steps(constraints, schema, tokens)) * 1e6
            theirs = statistics.median(gbnf_steps(model, schema, tokens)) * 1e6
            table.add_row(name, str(len(tokens)), f"{ours:.0f}", f"{theirs:.0f}", f"{theirs / ours:.1f}x")
    finally:
        model.close()
    console = Console()
    console.print(table)
    console.print(f"llguidance's tokenizer over the vocabulary, made once per model: {setup:.2f} s")
    backend = LlamaCppBackend(path, n_ctx=1024)
    try:
        tokens = sized(64, 4)
        schema = SCHEMAS["object, 2 fields"][0]
        plain, held = end_to_end(backend, None, tokens), end_to_end(backend, {"type": "object"}, tokens)
        fields = end_to_end(backend, schema, tokens)
    finally:
        backend.close()
    title = f"decoding, greedy, {len(QUESTIONS)} answers of up to {tokens} tokens (the first token's time left out)"
    rows = Table("answers", "tokens timed", "tokens/s", "vs plain", title=title)
    for name, (rate, made) in (("plain", plain), ("json_object (llguidance)", held), ("object, 2 fields (llguidance)", fields)):
        rows.add_row(name, str(made), f"{rate:.1f}", f"{rate / plain[0]:.2f}x")
    console.print(rows)


if __name__ == "__main__":
    main()
