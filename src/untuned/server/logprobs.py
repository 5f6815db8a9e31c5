"""Log-probabilities in the OpenAI wire shapes: per answer token for chat, and the legacy completions
shape, which with ``echo`` starts with the prompt's own tokens (scored in one teacher-forced pass)."""

from __future__ import annotations

from collections.abc import Sequence

from untuned.backends import Backend, TokenLogprob, TokenPieces
from untuned.server.chat.wire import ChatLogprobs, ChatTokenLogprob
from untuned.server.completions.wire import CompletionLogprobs
from untuned.server.wire import TopLogprob


def token_name(token: int, piece: bytes, as_ids: bool) -> str:
    return f"token_id:{token}" if as_ids else piece.decode("utf-8", "replace")


def chat_logprobs(entries: Sequence[TokenLogprob], top: int) -> ChatLogprobs:
    content = [
        ChatTokenLogprob(
            token=token_name(e.token, e.piece, False),
            logprob=e.logprob,
            bytes=list(e.piece),
            top_logprobs=[TopLogprob(token=token_name(t, p, False), logprob=lp, bytes=list(p)) for t, p, lp in e.top[:top]],
        )
        for e in entries
    ]
    return ChatLogprobs(content=content)


def completion_logprobs(
    backend: Backend, prompt: list[int] | None, generated: Sequence[TokenLogprob], top: int, *, as_ids: bool
) -> CompletionLogprobs:
    """The legacy shape for ``generated`` tokens, after the scored ``prompt`` tokens when echoing."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    pieces: list[bytes] = []
    if prompt:
        piece = backend.piece if isinstance(backend, TokenPieces) else (lambda t: backend.detokenize([t]).encode("utf-8"))
        scores = backend.score(prompt, start=1, top_k=max(top, 1)) if len(prompt) > 1 else None
        for index, token in enumerate(prompt):
            pieces.append(piece(token))
            tokens.append(token_name(token, pieces[-1], as_ids))
            if index == 0 or scores is None:
                token_logprobs.append(None)
                top_logprobs.append(None)
                continue
            row = index - 1
            token_logprobs.append(float(scores.logprobs[row]))
            top_logprobs.append(
                {
                    token_name(int(t), piece(int(t)), as_ids): float(lp)
                    for t, lp in zip(scores.top_ids[row][:top], scores.top_logprobs[row][:top])
                }
            )
    for entry in generated:
        pieces.append(entry.piece)
        tokens.append(token_name(entry.token, entry.piece, as_ids))
        token_logprobs.append(entry.logprob)
        top_logprobs.append({token_name(t, p, as_ids): lp for t, p, lp in entry.top[:top]})
    offsets, at = [], 0
    for piece_bytes in pieces:
        offsets.append(at)
        at += len(piece_bytes.decode("utf-8", "replace"))
    return CompletionLogprobs(tokens=tokens, token_logprobs=token_logprobs, top_logprobs=top_logprobs, text_offset=offsets)
