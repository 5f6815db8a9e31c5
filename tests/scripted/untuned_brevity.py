"""A judge mode added by a plugin, in one file (docs/architecture.md, "Adding a judge mode"): brevity, one
score 1-5 per answer, read from a reply of the form {"brevity": {"rationale": "...", "score": "4"}}."""

from __future__ import annotations

from untuned.judge.modes.aspects import AspectsMode

RUBRIC = {"brevity": "is it as short as the request allows? 5 = nothing to cut; 1 = padded throughout"}
MODE = AspectsMode("brevity", "1", ("brevity",), rubric=RUBRIC)
MODE.summary = "Score each answer's brevity 1-5 (a plugin's judge mode)."
