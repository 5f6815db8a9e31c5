"""JUST-EVAL-style judging (``untuned judge``): five aspects, safety, pairwise, tags.

>>> from untuned.answers import read_answers
>>> from untuned.judge import Judging, JudgeCache, TEMPLATES, load_judge
>>> judging = Judging(load_judge(url="http://127.0.0.1:8000/v1", model="judge"), TEMPLATES["multi"], JudgeCache("cache.db"))
>>> judging.run(read_answers("answers.jsonl"), "verdicts.jsonl", concurrency=8)
"""

from untuned.judge.cache import JudgeCache, cache_key
from untuned.judge.judges import HttpJudge, Judge, JudgeUnavailable, LocalJudge, bundled_judge_path, load_judge
from untuned.judge.parse import ReplyError, extract_json, parse_reply, read_score
from untuned.judge.run import JudgeSummary, Judging, Verdict, VerdictFile
from untuned.judge.templates import ASPECTS, TEMPLATES, Template

__all__ = [
    "ASPECTS",
    "HttpJudge",
    "Judge",
    "JudgeCache",
    "JudgeSummary",
    "JudgeUnavailable",
    "Judging",
    "LocalJudge",
    "ReplyError",
    "TEMPLATES",
    "Template",
    "Verdict",
    "VerdictFile",
    "bundled_judge_path",
    "cache_key",
    "extract_json",
    "load_judge",
    "parse_reply",
    "read_score",
]
