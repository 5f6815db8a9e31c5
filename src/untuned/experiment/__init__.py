"""Experiments: a declared grid of models × prompt sets × datasets, generated, judged and reported in
one output folder, resumable at any point (every step is one of untuned's append-only runs).

A plan is a TOML file (see ``experiments/k-curve.toml``)::

    name = "k-curve"
    [[models]]                      # any --model spec, with its loading and sampling
    name = "gemma"
    model = "default"
    max_tokens = 64
    [[datasets]]
    name = "je10"
    dataset = "just-eval"
    data_file = "../shared/data/just_eval_instruct.jsonl"
    limit = 10
    [judge]                         # url + model, or the bundled local judge
    modes = ["multi"]
    prompts = ["helpful:k=0,1,3", "safe"]   # a set by name or .urial file; NAME:k=... cuts it to its first K

The cells are every model × prompt variant × dataset. Each cell writes ``cells/<id>/answers.jsonl``
(``untuned generate``'s format) and ``cells/<id>/<mode>.jsonl`` (verdicts); ``manifest.jsonl`` holds
the plan, the versions, the model and prompt hashes and each cell's status, appended as it goes.
"""

from __future__ import annotations

from untuned.experiment.plan import (
    Cell,
    DatasetPlan,
    JudgePlan,
    ModelPlan,
    Plan,
    cells,
    dataset_items,
    prompt_variants,
    read_plan,
)
from untuned.experiment.report import write_report
from untuned.experiment.run import Experiment

__all__ = [
    "Cell",
    "DatasetPlan",
    "Experiment",
    "JudgePlan",
    "ModelPlan",
    "Plan",
    "cells",
    "dataset_items",
    "prompt_variants",
    "read_plan",
    "write_report",
]
