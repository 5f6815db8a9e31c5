"""Stop-string detection over a token stream, and cleanup of finished answers.

A stop string may arrive split across several tokens ("``" + "``"), so :class:`StopScanner`
holds back any tail of the text that could still grow into a stop string, and releases it only
once it cannot. Nothing of a stop string ever reaches the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class StopScanner:
    """Feed text pieces in, get back the text that is safe to show.

    ``hold_whitespace`` also holds back trailing whitespace until something else follows, so a
    stream never shows spaces or newlines that the final, cleaned answer would drop.
    """

    def __init__(self, stops: Iterable[str], *, hold_whitespace: bool = True) -> None:
        self.stops = tuple(s for s in dict.fromkeys(stops) if s)
        self.hold_whitespace = hold_whitespace
        self.stopped = False
        self.matched: str | None = None
        self._pending = ""
        self._started = False

    def feed(self, piece: str) -> str:
        """Add ``piece``; return what can be shown now. After a stop, returns ``""`` for ever."""
        if self.stopped or not piece:
            return ""
        text = self._pending + piece
        cut = -1
        for stop in self.stops:
            at = text.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut, self.matched = at, stop
        if cut != -1:
            self.stopped = True
            self._pending = ""
            return self._release(text[:cut].rstrip() if self.hold_whitespace else text[:cut])
        keep = self._partial_tail(text)
        if self.hold_whitespace:  # also hold whitespace just before the held part
            keep = len(text) - len(text[: len(text) - keep].rstrip())
        self._pending = text[len(text) - keep :] if keep else ""
        return self._release(text[: len(text) - keep])

    def flush(self) -> str:
        """End of stream without a stop: release what was held (trailing whitespace excepted)."""
        text, self._pending = self._pending, ""
        if self.stopped:
            return ""
        return self._release(text.rstrip() if self.hold_whitespace else text)

    def _release(self, text: str) -> str:
        if self.hold_whitespace and not self._started:
            text = text.lstrip()
            self._started = bool(text)
        return text

    def _partial_tail(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best


_FENCE_LINE = re.compile(r"^[ \t]*```[^\n`]*$", re.MULTILINE)


def clean_answer(text: str) -> str:
    """Tidy a generated answer: strip surrounding whitespace and a dangling code-fence line.

    Base models sometimes close the answer block with three backticks instead of four; that
    leaves an unmatched fence line at the end, which is removed here. Balanced code blocks stay.
    """
    text = text.strip()
    fences = _FENCE_LINE.findall(text)
    if len(fences) % 2 == 1:
        last = list(_FENCE_LINE.finditer(text))[-1]
        if not text[last.end() :].strip():
            text = text[: last.start()].rstrip()
    return text
