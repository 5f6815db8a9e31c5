"""Decoding under constraints and choices over llama.cpp: a JSON schema turned into a grammar (and the
keywords it can enforce), the grammar held token by token for greedy decoding, and llama.cpp's
sampler chains (repetition penalty, grammar, the end of sequence masked, top-k / top-p / temperature)."""

from __future__ import annotations

import codecs
import ctypes
import json
from collections import deque

import numpy as np

from untuned.backends.batching import Request
from untuned.backends.llamacpp.native import PENALTY_WINDOW, NativeModel
from untuned.backends.protocol import TokenLogprob

TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


class Grammar:
    """A llama.cpp grammar sampler used on its own: it checks the token chosen greedily, and only when
    that token breaks the grammar filters the whole vocabulary (as llama.cpp's own server does)."""

    def __init__(self, model: NativeModel, grammar: str) -> None:
        self.lib = model.lib
        self.sampler = self.lib.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
        if not self.sampler:
            raise ValueError("llama.cpp could not parse the grammar made from the JSON schema")
        self._one = np.zeros(1, dtype=TOKEN_DATA)

    def _apply(self, candidates: np.ndarray) -> None:
        array = self.lib.llama_token_data_array(
            candidates.ctypes.data_as(self.lib.llama_token_data_p), len(candidates), -1, False
        )
        self.lib.llama_sampler_apply(self.sampler, ctypes.byref(array))

    def allows(self, token: int) -> bool:
        self._one["id"], self._one["logit"] = token, 0.0
        self._apply(self._one)
        return bool(np.isfinite(self._one["logit"][0]))

    def best(self, logits: np.ndarray) -> int:
        """The likeliest token the grammar allows (``logits``: the whole row)."""
        candidates = np.empty(len(logits), dtype=TOKEN_DATA)
        candidates["id"], candidates["logit"], candidates["p"] = np.arange(len(logits)), logits, 0.0
        self._apply(candidates)
        return int(candidates["id"][candidates["logit"].argmax()])

    def accept(self, token: int) -> None:
        self.lib.llama_sampler_accept(self.sampler, token)

    def close(self) -> None:
        if self.sampler:
            self.lib.llama_sampler_free(self.sampler)
            self.sampler = None


# The JSON-schema keywords llama-cpp-python's grammar converter enforces (or that describe only);
# any other keyword would be dropped without a word (minimum, patternProperties...), so it is refused.
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "format",
        "minLength",
        "maxLength",
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
    }
)


def unsupported_schema_keyword(schema: object, path: str = "schema") -> str | None:
    """The first keyword of ``schema`` the grammar could not enforce, as ``path: keyword``; None if none."""
    if isinstance(schema, list):
        return next((found for i, s in enumerate(schema) if (found := unsupported_schema_keyword(s, f"{path}[{i}]"))), None)
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if key not in SCHEMA_KEYWORDS:
            return f"{path}: {key}"
        nested = value.values() if key in ("properties", "$defs", "definitions") and isinstance(value, dict) else [value]
        if key in (
            "properties",
            "$defs",
            "definitions",
            "items",
            "prefixItems",
            "anyOf",
            "oneOf",
            "allOf",
            "additionalProperties",
        ):
            for index, item in enumerate(nested):
                found = unsupported_schema_keyword(item, f"{path}.{key}")
                if found:
                    return found
    return None


# Bounds on what a schema may ask of the grammar, checked before anything reaches llama.cpp. Its grammar
# parser recurses once per nesting level: a string of "maxLength": 25000 becomes 25000 nested groups and
# overflows the stack (the process dies); from about 1050 it refuses the grammar. Counts above
# MAX_REPEAT, schemas nested deeper than MAX_SCHEMA_DEPTH and grammars past MAX_GRAMMAR_DEPTH or
# MAX_GRAMMAR_BYTES are refused with their limit.
MAX_REPEAT = 1000  # minLength, maxLength, minItems, maxItems
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays
MAX_GRAMMAR_DEPTH = 1000  # nested groups in the GBNF text
MAX_GRAMMAR_BYTES = 256 * 1024
COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")


def schema_bound_problem(schema: object, path: str = "schema", depth: int = 0) -> str | None:
    """The first thing in ``schema`` over the bounds above, in words; None if it is within them."""
    if depth > MAX_SCHEMA_DEPTH:
        return f"{path}: the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            found = schema_bound_problem(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    if not isinstance(schema, dict):
        return None
    for key in COUNT_KEYWORDS:
        value = schema.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{path}.{key}: {value!r} is not a count (a whole number from 0)"
        if value > MAX_REPEAT:
            return f"{path}.{key}: {value} is over {MAX_REPEAT}, the most this server's grammar can hold"
    for key, value in schema.items():
        if isinstance(value, (dict, list)) and key not in ("enum", "const", "default", "examples"):
            found = schema_bound_problem(value, f"{path}.{key}", depth + 1)
            if found:
                return found
    return None


def grammar_depth(grammar: str) -> int:
    """The deepest nesting of groups ``( ... )`` in a GBNF text (quoted strings and character classes skipped)."""
    depth = deepest = 0
    inside: str | None = None  # '"' in a string, ']' in a character class
    escaped = False
    for char in grammar:
        if inside is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == inside:
                inside = None
        elif char == '"':
            inside = '"'
        elif char == "[":
            inside = "]"
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def json_schema_grammar(schema: str) -> str:
    """The GBNF grammar of a JSON schema (llama-cpp-python's converter); a keyword it would not enforce,
    a construct it cannot express, or a schema past the bounds above is a ValueError naming it."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        parsed = json.loads(schema)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"the schema is not JSON this server reads: {exc}") from None
    found = schema_bound_problem(parsed)
    if found:
        raise ValueError(found)
    found = unsupported_schema_keyword(parsed)
    if found:
        raise ValueError(
            f"{found} cannot be enforced by the grammar; remove it or use the supported keywords "
            f"({', '.join(sorted(SCHEMA_KEYWORDS))})"
        )
    try:
        grammar = json_schema_to_gbnf(schema)
    except (AssertionError, KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise ValueError(f"the grammar converter cannot express this schema: {exc}") from None
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise ValueError(f"the schema's grammar is {len(grammar)} bytes, over this server's {MAX_GRAMMAR_BYTES}; simplify it")
    if grammar_depth(grammar) > MAX_GRAMMAR_DEPTH:
        raise ValueError(f"the schema's grammar nests deeper than {MAX_GRAMMAR_DEPTH} groups; lower its counts")
    return grammar


def sampler_chain(
    model: NativeModel,
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    repetition_penalty: float,
    seed: int,
    grammar: str | None = None,
    ignore_eos: bool = False,
    logit_bias: tuple[tuple[int, float], ...] = (),
):
    """A llama.cpp sampler chain: repetition penalty, logit biases (the end of generation masked too, with
    ignore_eos), a grammar, then greedy or top-k / top-p / temperature / draw."""
    lib = model.lib
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if repetition_penalty != 1.0:
        penalties = lib.llama_sampler_init_penalties(model.n_vocab, PENALTY_WINDOW, repetition_penalty, 0.0, 0.0)
        lib.llama_sampler_chain_add(chain, penalties)
    pairs = [*logit_bias, *((int(t), float("-inf")) for t in (model.end_tokens if ignore_eos else ()))]
    if pairs:
        biases = (lib.llama_logit_bias * len(pairs))(*pairs)
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(model.n_vocab, len(pairs), biases))
    if grammar is not None:
        constrained = lib.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
        if not constrained:
            lib.llama_sampler_free(chain)
            raise ValueError("llama.cpp could not parse the grammar made from the JSON schema")
        lib.llama_sampler_chain_add(chain, constrained)
    if temperature <= 0.0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain
    if top_k > 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(top_k))
    if top_p < 1.0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
    return chain


class Slot:
    """A sequence of the engine's context and the request it answers: what is left to feed, and how it
    chooses its tokens (a llama.cpp sampler chain, or greedy here, perhaps held to a grammar)."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.request: Request | None = None
        self.reserved = False  # held by an exclusive user (scoring)
        self.pending: list[int] = []  # tokens to feed: the body, then each sampled token
        self.pos = 0  # position of pending[0]
        self.generating = False
        self.produced = 0
        self.admitted = 0
        self.sampler = None  # a llama.cpp sampler chain, or None for greedy decoding done here
        self.penalty = 1.0
        self.recent: deque[int] = deque(maxlen=PENALTY_WINDOW)  # generated tokens the repetition penalty sees
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.logprob: TokenLogprob | None = None  # of the token chosen last, when the request asks for them
        self.grammar: Grammar | None = None  # greedy decoding held to a grammar

    @property
    def busy(self) -> bool:
        return self.request is not None or self.reserved


def greedy_choice(
    logits: np.ndarray,
    recent: deque[int],
    penalty: float,
    *,
    grammar: Grammar | None = None,
    masked: np.ndarray | None = None,
    bias: tuple[tuple[int, float], ...] = (),
) -> int:
    """The most likely token after llama.cpp's repetition penalty and the logit ``bias``, without its sampler's
    copy of the whole vocabulary: the same choice as its penalties + logit-bias + greedy chain, in a fraction
    of the time. ``masked`` tokens can never be chosen (ignore_eos masks the end tokens). The row is left as
    it was: the token's log-probability is read from it afterwards, under the model's own distribution."""
    changed = []
    if penalty != 1.0 and recent:
        seen = np.fromiter(set(recent), dtype=np.int64)
        kept = logits[seen].copy()
        changed.append((seen, kept))
        logits[seen] = np.where(kept <= 0, kept * np.float32(penalty), kept / np.float32(penalty))
    if bias:
        ids = np.asarray([t for t, _ in bias], dtype=np.int64)
        changed.append((ids, logits[ids].copy()))
        np.add.at(logits, ids, np.asarray([b for _, b in bias], dtype=np.float32))
    if masked is not None:
        changed.append((masked, logits[masked].copy()))
        logits[masked] = -np.inf
    try:
        return grammar.best(logits) if grammar else int(logits.argmax())
    finally:
        for where, values in reversed(changed):
            logits[where] = values
