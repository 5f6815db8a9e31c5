"""The steps of a benchmark run, one module each, called alike by the command line (``untuned generate``,
``judge``, ``shift``, ``report``) and by ``untuned experiment``: what a benchmark needs (MT-bench's
temperatures, its references, its judge modes) is decided here and in its module of
:mod:`untuned.benchmarks`, never by a driver.

- :mod:`~untuned.pipeline.plan`: :class:`RunPlan`, the model, its load options and the sampling, once;
- :mod:`~untuned.pipeline.answer`: answering a benchmark's items into a resumable run;
- :mod:`~untuned.pipeline.judge`: the items a judge mode takes, read from answer files, and judged;
- :mod:`~untuned.pipeline.shift`: how far the URIAL prefix moves the base model along the answers.
"""

from untuned.pipeline.answer import answer
from untuned.pipeline.judge import judge_answers, judged_items
from untuned.pipeline.run_plan import RunPlan
from untuned.pipeline.shift import shift_answers

__all__ = ["RunPlan", "answer", "judge_answers", "judged_items", "shift_answers"]
