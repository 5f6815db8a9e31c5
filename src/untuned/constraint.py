"""Structured output held token by token by llguidance: a JSON schema or a Lark grammar compiled into a
matcher, its mask of allowed tokens applied to the logits row before the sampler chooses.

llguidance (what vLLM, SGLang and llama.cpp use for JSON schemas) never aborts: a grammar it cannot
build, a token it cannot take, or a step that runs past its fuel puts the matcher in an error state that
is read here and becomes a :class:`ConstraintError` for that request alone. Its cost per token is bounded
by its parser limits (lexer fuel, Earley items per step), so no schema can hold the engine for long.

Bounded repetitions (``maxLength: 5000``) are lexer states, not text spelled out, so real schemas
(pydantic's ``Field(max_length=...)``) pass; what no output can satisfy is found by the first mask,
before the request waits for the model.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from untuned.errors import ConstraintError
from untuned.tools import JSON_STYLE, closed_objects

COMPILED_KEPT = 64  # compiled matchers kept per tokenizer, least recently used dropped first
MAX_GRAMMAR_TEXT = 256 * 1024  # a JSON schema's or grammar's text, in characters
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays
MAX_COUNT = 100_000  # minLength, maxLength, minItems, maxItems, and {n} in a pattern
COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")


def _limits():
    import llguidance

    # tighter than llguidance's defaults: one step's work stays in milliseconds on a slow CPU
    return llguidance.LLParserLimits(step_lexer_fuel=200_000, step_max_items=50_000, max_grammar_size=200_000)


@dataclass(frozen=True)
class Constrained:
    """What a request's output is held to: a JSON schema (text) or a Lark grammar (llguidance's)."""

    kind: str  # "json_schema" or "lark"
    text: str

    @classmethod
    def of(cls, *, json_schema: str | None, grammar: str | None) -> Constrained | None:
        if json_schema is not None and grammar is not None:
            raise ConstraintError("json_schema and grammar are two constraints: give one")
        if json_schema is not None:
            return cls("json_schema", json_schema)
        return cls("lark", grammar) if grammar is not None else None


def schema_problem(schema: object, path: str = "schema", depth: int = 0) -> str | None:
    """The first thing in a parsed schema past this module's bounds, in words; None if within them."""
    if depth > MAX_SCHEMA_DEPTH:
        return f"{path}: the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
    if isinstance(schema, list):
        return next((f for i, item in enumerate(schema) if (f := schema_problem(item, f"{path}[{i}]", depth + 1))), None)
    if not isinstance(schema, dict):
        return None
    for key in COUNT_KEYWORDS:
        value = schema.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{path}.{key}: {value!r} is not a count (a whole number from 0)"
        if value > MAX_COUNT:
            return f"{path}.{key}: {value} is over {MAX_COUNT}, the most this server holds an answer to"
    pattern = schema.get("pattern")
    if pattern is not None and not isinstance(pattern, str):
        return f"{path}.pattern: {pattern!r} is not a regular expression (a string)"
    if isinstance(pattern, str) and (count := _largest_count(pattern)) > MAX_COUNT:
        return f"{path}.pattern: a repetition of {count} is over {MAX_COUNT}, the most this server holds"
    for key, value in schema.items():
        if isinstance(value, (dict, list)) and key not in ("enum", "const", "default", "examples"):
            found = schema_problem(value, f"{path}.{key}", depth + 1)
            if found:
                return found
    return None


def _largest_count(pattern: str) -> int:
    """The largest number in a ``{n}``, ``{n,}`` or ``{n,m}`` of a regular expression (0 if none); read
    before llguidance sees it, so that no count becomes work or memory in proportion to it."""
    import re

    numbers = [int(n) for group in re.findall(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}", pattern) for n in group if n]
    return max(numbers, default=0)


def grammar_text(constrained: Constrained) -> str:
    """llguidance's grammar for a constraint; ConstraintError naming what is wrong with it."""
    import llguidance

    if len(constrained.text) > MAX_GRAMMAR_TEXT:
        raise ConstraintError(f"the {constrained.kind} is {len(constrained.text)} characters, over {MAX_GRAMMAR_TEXT}")
    if constrained.kind == "lark":
        return llguidance.LLMatcher.grammar_from_lark(constrained.text)
    try:
        parsed = json.loads(constrained.text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConstraintError(f"the schema is not JSON this server reads: {exc}") from None
    if not isinstance(parsed, (dict, bool)):
        raise ConstraintError("the schema is not a JSON schema (an object)")
    found = schema_problem(parsed)
    if found:
        raise ConstraintError(found)
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(closed_objects(parsed), defaults=JSON_STYLE)
    except (ValueError, TypeError) as exc:
        raise ConstraintError(f"the schema cannot be compiled: {exc}") from None


class Constraints:
    """Matchers over one model's tokenizer: compiled once per constraint (a bounded LRU), a fresh copy per
    request. ``tokenizer`` makes llguidance's tokenizer on first use (about a second for a large
    vocabulary), so a model that never sees a schema never pays for it."""

    def __init__(self, tokenizer: Callable[[], object], n_vocab: int) -> None:
        self._make_tokenizer = tokenizer
        self._tokenizer = None
        self.n_vocab = n_vocab
        self._compiled: OrderedDict[Constrained, object] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._make_tokenizer()
            return self._tokenizer

    def matcher(self, constrained: Constrained) -> Matcher:
        """A fresh matcher for ``constrained``, checked: ConstraintError if llguidance refuses the grammar or
        if no output can begin under it."""
        with self._lock:
            found = self._compiled.get(constrained)
            if found is not None:
                self._compiled.move_to_end(constrained)
        if found is None:
            found = self._compile(constrained)
            with self._lock:
                self._compiled[constrained] = found
                while len(self._compiled) > COMPILED_KEPT:
                    self._compiled.popitem(last=False)
        return Matcher(found.deep_copy(), self.n_vocab)

    def _compile(self, constrained: Constrained):
        import llguidance

        text = grammar_text(constrained)
        matcher = llguidance.LLMatcher(self.tokenizer, text, log_level=0, limits=_limits())
        if matcher.is_error():
            raise ConstraintError(f"the {_name(constrained)} cannot be enforced: {_first_line(matcher.get_error())}")
        first = Matcher(matcher.deep_copy(), self.n_vocab)
        if not first.allowed().any():
            raise ConstraintError(f"the {_name(constrained)} admits no output: no token can begin an answer that matches it")
        return matcher


class Matcher:
    """One request's matcher: the mask of the next token, the token taken, whether the output is complete."""

    def __init__(self, matcher, n_vocab: int) -> None:
        from llguidance.numpy import allocate_token_bitmask

        self._matcher = matcher
        self.n_vocab = n_vocab
        self._bits = allocate_token_bitmask(1, n_vocab)

    def compute(self) -> None:
        """The mask of the next token, computed into this matcher's bits; ConstraintError if the grammar failed."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self._matcher, self._bits)
        self._check()

    def allows(self, token: int) -> bool:
        """Whether the last computed mask allows ``token`` (one bit read, no unpacking)."""
        return bool((int(self._bits[0, token >> 5]) >> (token & 31)) & 1)

    def unpacked(self) -> np.ndarray:
        """The last computed mask as booleans over the vocabulary."""
        return np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.n_vocab].astype(bool)

    def allowed(self) -> np.ndarray:
        """The tokens the grammar allows next, as booleans over the vocabulary; ConstraintError if it failed."""
        self.compute()
        return self.unpacked()

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(int(token)):
            self._check()
            raise ConstraintError(f"the grammar could not take token {token}")

    @property
    def done(self) -> bool:
        """Nothing but the end of the answer can follow."""
        return self._matcher.is_stopped()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise ConstraintError(f"the output's grammar failed: {_first_line(self._matcher.get_error())}")


def masked_choice(row: np.ndarray, matcher: Matcher | None, choose: Callable[[], int], *, greedy: bool = False) -> int:
    """``choose()`` a token with every token the matcher does not allow at -inf in ``row`` (llama.cpp's logits,
    read in place by its sampler), the row restored afterwards. Greedy, the unmasked choice is tried first and
    kept when allowed (the likeliest token overall, if allowed, is the likeliest allowed one): one bit read
    instead of the whole vocabulary masked. A row whose allowed tokens are all -inf or NaN is a ConstraintError
    / ValueError here, never a sampler's undefined choice."""
    if np.isnan(row).any():
        raise ValueError("the model gave NaN logits; this request cannot go on")
    if matcher is None:
        return choose()
    matcher.compute()
    if greedy:
        token = choose()
        if matcher.allows(token):
            return token
    allowed = matcher.unpacked()
    if not allowed.any():
        raise ConstraintError("the grammar allows no next token: the output cannot go on and still match it")
    kept = row.copy()  # whole-row copies and masked writes: cheaper than gathering the disallowed ids
    np.copyto(row, -np.inf, where=~allowed)
    try:
        if not np.isfinite(row).any():
            raise ConstraintError("no token the grammar allows has a finite probability")
        return choose()
    finally:
        np.copyto(row, kept)


def _name(constrained: Constrained) -> str:
    return "schema" if constrained.kind == "json_schema" else "grammar"


def _first_line(text: str) -> str:
    """llguidance's message on one line (it spans several: where, what, the regex with a caret), at most 400 characters."""
    return " ".join(part.strip() for part in (text or "unknown error").strip().splitlines() if part.strip())[:400]
