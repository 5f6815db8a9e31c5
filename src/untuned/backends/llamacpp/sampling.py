"""Choices over llama.cpp: its sampler chains (repetition penalty, the end of sequence masked, top-k / top-p /
temperature), greedy decoding done here with the same choices, and llguidance's tokenizer over the model's
vocabulary (structured output: :mod:`untuned.constraint`)."""

from __future__ import annotations

import codecs
import ctypes
from collections import deque

import numpy as np

from untuned.backends.batching import Request
from untuned.backends.llamacpp.native import PENALTY_WINDOW, NativeModel
from untuned.backends.protocol import TokenLogprob, is_greedy
from untuned.constraint import Matcher
from untuned.errors import InvalidInput

TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


def llguidance_tokenizer(model: NativeModel):
    """llguidance's tokenizer over the model's own vocabulary (llama.cpp's tokenizer underneath), every end
    token of the model an end that llguidance allows once the output is complete. Each token's bytes as
    llama.cpp renders them with specials shown; control tokens (and user-defined ``<...>`` ones) marked
    with a leading 0xff, as llguidance reads a vocabulary."""
    from llguidance import LLTokenizer

    lib = model.lib
    buffer = ctypes.create_string_buffer(16 * 1024)
    tokens = []
    for token in range(model.n_vocab):
        n = lib.llama_token_to_piece(model.vocab, token, buffer, len(buffer) - 1, 0, True)
        if n < 0:
            raise InvalidInput(f"token {token} of the vocabulary is longer than {len(buffer) - 1} bytes")
        text = bytes(buffer[:n])
        attr = lib.llama_vocab_get_attr(model.vocab, token)
        user = attr & lib.LLAMA_TOKEN_ATTR_USER_DEFINED and text.startswith(b"<") and text.endswith(b">")
        tokens.append(b"\xff" + text if attr & lib.LLAMA_TOKEN_ATTR_CONTROL or user else text)
    address = ctypes.cast(lib.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    ends = [int(t) for t in model.end_tokens]
    return LLTokenizer.from_llamacpp(tokens=tokens, vocab_ptr=model.vocab, tokenize_fptr=address, eos_token=ends, slices=None)


def sampler_chain(
    model: NativeModel,
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    repetition_penalty: float,
    seed: int,
    ignore_eos: bool = False,
    logit_bias: tuple[tuple[int, float], ...] = (),
):
    """A llama.cpp sampler chain: repetition penalty, logit biases (the end of generation masked too, with
    ignore_eos), then greedy (a temperature below MIN_TEMPERATURE is greedy: dividing by a tiny one would
    make the logits infinite) or top-k / top-p / temperature / draw. A grammar's mask is applied to the
    logits before the chain reads them (:func:`untuned.constraint.masked_choice`)."""
    lib = model.lib
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if repetition_penalty != 1.0:
        penalties = lib.llama_sampler_init_penalties(model.n_vocab, PENALTY_WINDOW, repetition_penalty, 0.0, 0.0)
        lib.llama_sampler_chain_add(chain, penalties)
    pairs = [*logit_bias, *((int(t), float("-inf")) for t in (model.end_tokens if ignore_eos else ()))]
    if pairs:
        biases = (lib.llama_logit_bias * len(pairs))(*pairs)
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(model.n_vocab, len(pairs), biases))
    if is_greedy(temperature):
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
        self.matcher: Matcher | None = None  # the output's constraint (llguidance), if any
        self.history: list[int] = []  # every token of the sequence: prompt, then answer (what drafts continue)

    @property
    def busy(self) -> bool:
        return self.request is not None or self.reserved

    MOVED = ("request", "pending", "pos", "generating", "produced", "admitted", "sampler", "penalty", "recent", "decoder")
    MOVED += ("logprob", "matcher", "history")

    def take_over(self, other: Slot) -> None:
        """Become the slot of ``other``'s request (the engine copied its cells here); ``other`` is left free."""
        for name in self.MOVED:
            setattr(self, name, getattr(other, name))
        other.request, other.sampler, other.matcher, other.history = None, None, None, []
        other.recent, other.decoder = deque(maxlen=PENALTY_WINDOW), codecs.getincrementaldecoder("utf-8")("replace")


def greedy_choice(
    logits: np.ndarray,
    recent: deque[int],
    penalty: float,
    *,
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
        return int(logits.argmax())
    finally:
        for where, values in reversed(changed):
            logits[where] = values
