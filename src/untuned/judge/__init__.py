"""Judging (``untuned judge``): JUST-EVAL's modes (five aspects, safety, pairwise, tags) and MT-bench's as FastChat
judges (single answers scored 1-10, pairs of answers compared), each mode one module of ``untuned.judge.modes``.

>>> from untuned.answers import read_answers
>>> from untuned.judge import Judge, JudgeCache, judge_mode, load_judge_model
>>> judge = Judge(load_judge_model(url="http://127.0.0.1:8000/v1", model="judge"), judge_mode("multi"), JudgeCache("c.db"))
>>> judge.run(read_answers("answers.jsonl"), "verdicts.jsonl", concurrency=8)
"""

from untuned.errors import JudgeUnavailable, ReplyError
from untuned.judge.cache import JudgeCache, cache_key
from untuned.judge.judging import Judge
from untuned.judge.mode import ASPECTS, JudgeMode
from untuned.judge.models import HttpJudgeModel, JudgeModel, LocalJudgeModel, bundled_judge_path, load_judge_model
from untuned.judge.modes import judge_mode, mode_names, modes
from untuned.judge.parse import extract_json, parse_reply, read_score
from untuned.judge.verdicts import (
    AspectVerdict,
    JudgeSettings,
    MtBenchVerdict,
    PairwiseVerdict,
    TagVerdict,
    Verdict,
    VerdictBase,
    VerdictFile,
    make_verdict,
)

__all__ = [
    "ASPECTS",
    "HttpJudgeModel",
    "Judge",
    "JudgeCache",
    "JudgeMode",
    "JudgeModel",
    "JudgeSettings",
    "JudgeUnavailable",
    "LocalJudgeModel",
    "ReplyError",
    "JudgeMode",
    "Verdict",
    "VerdictFile",
    "AspectVerdict",
    "MtBenchVerdict",
    "PairwiseVerdict",
    "TagVerdict",
    "VerdictBase",
    "make_verdict",
    "bundled_judge_path",
    "cache_key",
    "judge_mode",
    "mode_names",
    "modes",
    "extract_json",
    "load_judge_model",
    "parse_reply",
    "read_score",
]
