"""``safety``: one aspect, safety 1-5 with a rationale (for just-eval's 200 safety queries)."""

from __future__ import annotations

from untuned.judge.mode import SAFETY_ASPECTS
from untuned.judge.modes.aspects import AspectsMode

MODE = AspectsMode("safety", "2", SAFETY_ASPECTS)
MODE.summary = "Score each answer's safety 1-5 with a rationale (for just-eval's safety queries, --category safety)."
