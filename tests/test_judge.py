"""Judging against real HTTP judges (well-behaved and misbehaving on purpose), the local SmolLM2
judge, reply parsing, the cache, and report numbers checked against independent arithmetic."""

from __future__ import annotations

import json
import math
import re
import statistics
import time

import pytest
from helpers import plain
from helpers.judges import JSON, chat_reply, user_text
from helpers.servers import scripted_server
from typer.testing import CliRunner

from untuned.answers import AnswerItem
from untuned.cli import app
from untuned.interop import load_verdicts
from untuned.judge import (
    HttpJudgeModel,
    Judge,
    JudgeCache,
    LocalJudgeModel,
    ReplyError,
    VerdictFile,
    judge_mode,
    parse_reply,
)
from untuned.judge.mode import ASPECTS, PAIRWISE_ASPECTS
from untuned.judge.verdicts import make_verdict
from untuned.report import build_report, stat, to_markdown, write_csv


def expected_score(answer: str) -> int:
    return len(answer) % 5 + 1


def verdict_json(text: str, *, style: int = 0) -> str:
    """What a good judge answers: each aspect scored from the answer's length, in varied styles."""
    answer = re.search(r"\[Answer begins\]\n(.*)\n\[Answer ends\]", text, re.DOTALL).group(1)
    score = expected_score(answer)
    aspects = ("safety",) if "- safety:" in text else ASPECTS
    if style == 1:  # fenced, trailing comma, scores as numbers
        body = ", ".join(f'"{a}": {{"rationale": "ok", "score": {score}}}' for a in aspects)
        return f"Here you go:\n```json\n{{{body},}}\n```"
    return json.dumps({a: {"rationale": f"because {a}", "score": str(score)} for a in aspects})


def items(n: int, *, garbage: set[int] = frozenset()) -> list[AnswerItem]:
    return [
        AnswerItem(
            id=str(i),
            query=f"{'GARBAGE ' if i in garbage else ''}Question {i}?",
            answer="x" * (i * 7 + 3),
            generator="model-a",
            dataset="set1" if i % 2 else "set2",
            tags={"topics": ["stem" if i % 3 else "finance"]},
        )
        for i in range(n)
    ]


@pytest.mark.slow
def test_misbehaving_judge_every_item_scored_or_failed_once(tmp_path):
    def script(method, path, count, body):
        text = user_text(body)
        if "GARBAGE" in text:
            return 200, JSON, chat_reply("I think it is pretty good overall!")
        kind = count % 6
        if kind == 1:
            return 500, JSON, b'{"error": {"message": "internal"}}'
        if kind == 2:
            return 429, {**JSON, "Retry-After": "0"}, b'{"error": {"message": "slow down"}}'
        if kind == 3:
            time.sleep(4.0)  # twice the client's 2 s timeout: retried
        return 200, JSON, chat_reply(verdict_json(text, style=count % 2))

    work = items(24, garbage={5, 17})
    out = tmp_path / "verdicts.jsonl"
    with scripted_server(script) as (url, seen):
        judge = HttpJudgeModel(url, "judge", timeout=2.0, max_retries=8)
        summary = Judge(judge, judge_mode("multi"), JudgeCache(tmp_path / "c.db"), parse_retries=2).run(work, out, concurrency=6)
    verdicts = VerdictFile(out).read()
    assert sorted(v.id for v in verdicts) == sorted(i.id for i in work)  # none lost, none duplicated
    assert summary.done == 22 and summary.failed == 2
    for verdict in verdicts:
        item = work[int(verdict.id)]
        if verdict.id in ("5", "17"):
            assert verdict.status == "failed" and verdict.raw == "I think it is pretty good overall!" and verdict.attempts == 3
            assert verdict.scores == {}  # nothing invented
        else:
            assert verdict.status == "scored"
            assert verdict.scores == {a: expected_score(item.answer) for a in ASPECTS}  # no mix-up between threads
    assert any(path.endswith("/chat/completions") for _, path in seen)


def test_retry_after_is_honoured(tmp_path):
    arrivals = []

    def script(method, path, count, body):
        arrivals.append(time.monotonic())
        if count == 1:
            return 429, {**JSON, "Retry-After": "2"}, b'{"error": {"message": "slow down"}}'
        return 200, JSON, chat_reply(verdict_json(user_text(body)))

    with scripted_server(script) as (url, _):
        verdict = Judge(HttpJudgeModel(url, "judge"), judge_mode("multi")).judge_item(items(1)[0])
    assert verdict.status == "scored" and arrivals[1] - arrivals[0] >= 1.9


def test_rerun_hits_the_cache_and_resumes(tmp_path):
    def script(method, path, count, body):
        return 200, JSON, chat_reply(verdict_json(user_text(body)))

    work = items(10)
    with scripted_server(script) as (url, seen):
        judging = Judge(HttpJudgeModel(url, "judge"), judge_mode("multi"), JudgeCache(tmp_path / "cache.db"))
        first = judging.run(work, tmp_path / "one.jsonl", concurrency=4)
        asked = len(seen)
        again = judging.run(work, tmp_path / "two.jsonl", concurrency=4)  # a fresh output file: all from the cache
        resumed = judging.run(work, tmp_path / "one.jsonl")  # the same file: nothing left to do
        assert len(seen) == asked == 10
    assert first.counts["requests"] == 10 and again.counts["requests"] == 0 and again.counts["cached"] == 10
    assert resumed.skipped == 10
    one, two = VerdictFile(tmp_path / "one.jsonl").latest(), VerdictFile(tmp_path / "two.jsonl").latest()
    assert {k: v.scores for k, v in one.items()} == {k: v.scores for k, v in two.items()}
    assert sorted(one) == [f"multi:{i}" for i in sorted(range(10), key=str)]


def test_pairwise_cancels_position_bias(tmp_path):
    def always_first(method, path, count, body):
        return 200, JSON, chat_reply(json.dumps({a: {"rationale": "first is best", "winner": "A"} for a in PAIRWISE_ASPECTS}))

    def prefers_longer(method, path, count, body):
        text = user_text(body)
        a = re.search(r"\[Answer A begins\]\n(.*)\n\[Answer A ends\]", text, re.DOTALL).group(1)
        b = re.search(r"\[Answer B begins\]\n(.*)\n\[Answer B ends\]", text, re.DOTALL).group(1)
        return (
            200,
            JSON,
            chat_reply(
                json.dumps({x: {"rationale": "longer", "winner": "A" if len(a) > len(b) else "B"} for x in PAIRWISE_ASPECTS})
            ),
        )

    first = items(4)
    second = {i.id: i.model_copy(update={"answer": "y" * 20, "generator": "model-b"}) for i in first}
    cases = ((always_first, ["tie"] * 4, [1.5] * 4), (prefers_longer, ["B", "B", "B", "A"], [1, 1, 1, 2]))
    for script, expected, preferences in cases:
        out = tmp_path / f"{script.__name__}.jsonl"
        with scripted_server(script) as (url, _):
            Judge(HttpJudgeModel(url, "judge"), judge_mode("pairwise")).run(first, out, second_answers=second)
        verdicts = sorted(VerdictFile(out).read(), key=lambda v: v.id)
        assert [v.winners["helpfulness"] for v in verdicts] == expected  # answers of 3, 10, 17, 24 vs 20 characters
        assert [v.preference for v in verdicts] == preferences  # AlpacaEval's encoding, from the first file's side
    report = build_report(VerdictFile(out).read())
    helpfulness = next(p for p in report.pairwise if p.aspect == "helpfulness")
    assert (helpfulness.a, helpfulness.b, helpfulness.wins, helpfulness.ties, helpfulness.losses) == (
        "model-a",
        "model-b",
        1,
        0,
        3,
    )


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"safety": {"rationale": "fine", "score": "5"}}', 5),
        ('```json\n{"safety": {"rationale": "fine", "score": 4,},}\n```', 4),
        ('Sure! {"Safety": {"score": "3/5"}} Hope this helps.', 3),
        ('{"safety": {"rationale": "no harm possible", "score": "N/A"}}', None),
        ('{"safety": 2.0}', 2),
    ],
)
def test_parsing_tolerates_common_reply_shapes(reply, expected):
    assert parse_reply(judge_mode("safety"), reply)["scores"] == {"safety": expected}


@pytest.mark.parametrize(
    "reply",
    ['{"safety": {"score": "7"}}', '{"safety": {"score": "good"}}', '{"harm": {"score": "5"}}', "no json", '{"safety": {}}'],
)
def test_parsing_never_invents_a_score(reply):
    with pytest.raises(ReplyError):
        parse_reply(judge_mode("safety"), reply)


def test_tag_replies_use_just_evals_label_sets():
    parsed = parse_reply(judge_mode("tag"), '{"task_types": ["Math", "reasoning"], "topics": "stem", "difficulty": "hard"}')
    assert parsed["labels"] == {"task_types": ["math", "reasoning"], "topics": ["stem"], "difficulty": ["hard"]}
    with pytest.raises(ReplyError, match="unknown topics"):
        parse_reply(judge_mode("tag"), '{"task_types": ["math"], "topics": ["cooking"], "difficulty": "easy"}')


@pytest.mark.slow
def test_local_smollm2_judge_with_schema(smollm_path, tmp_path):
    judging = Judge(LocalJudgeModel(smollm_path), judge_mode("multi"), JudgeCache(tmp_path / "c.db"), parse_retries=0)
    answers = [
        AnswerItem(id=str(i), query=q, answer=a)
        for i, (q, a) in enumerate(
            [
                ("What is the capital of France?", "The capital of France is Paris."),
                ("What is 2 + 2?", "2 + 2 = 4."),
                ("Name a primary colour.", "Red is a primary colour."),
            ]
        )
    ]
    summary = judging.run(answers, tmp_path / "v.jsonl")
    verdicts = VerdictFile(tmp_path / "v.jsonl").read()
    assert summary.done == 3 and all(v.status == "scored" and set(v.scores) == set(ASPECTS) for v in verdicts)
    assert all(s is None or 1 <= s <= 5 for v in verdicts for s in v.scores.values())
    stats = judging.model.backend.stats()  # the instructions were evaluated once, for the first item
    assert (stats.prefix_misses, stats.prefix_hits) == (1, 2)


def test_chat_prompt_makes_the_shared_messages_its_prefix(smollm_path):
    """The judge's instructions (its system message) become the cacheable prefix: the same text and the
    same token ids as the whole rendered at once; without ``shared``, no prefix."""
    from untuned.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(smollm_path, n_ctx=2048)
    try:
        messages = judge_mode("multi").messages("What is 2 + 2?", "2 + 2 = 4.")
        whole, split = backend.chat_prompt(messages), backend.chat_prompt(messages, shared=1)
        assert whole.prefix == "" and split.text == whole.text
        assert messages[0]["content"] in split.prefix and messages[1]["content"] in split.body
        assert backend.tokenize_prompt(split) == backend.tokenize_prompt(whole)
    finally:
        backend.close()


def test_report_numbers_match_independent_arithmetic(tmp_path):
    rows = {"a": [5, 4, None, 2, 3], "b": [1, 1, 2, 5, 4]}  # helpfulness scores; None = N/A
    out = tmp_path / "v.jsonl"
    store = VerdictFile(out)
    for model, scores in rows.items():
        for i, score in enumerate(scores):
            topic = "stem" if i < 3 else "finance"
            store.append(
                make_verdict(
                    id=f"{model}{i}",
                    mode="multi",
                    template="multi@1",
                    judge="j",
                    status="scored",
                    generator=model,
                    dataset="d",
                    tags={"topics": [topic]},
                    query="q",
                    answer="one two three",
                    scores={a: score for a in ASPECTS},
                )
            )
    store.append(
        make_verdict(
            id="a9", mode="multi", template="multi@1", judge="j", status="failed", generator="a", query="q", answer="x y"
        )
    )
    report = build_report(load_verdicts(out))
    a = next(m for m in report.models if m.model == "a")
    known = [5, 4, 2, 3]
    assert a.aspects["helpfulness"].mean == pytest.approx(statistics.mean(known))
    assert a.aspects["helpfulness"].ci == pytest.approx(1.96 * statistics.stdev(known) / math.sqrt(4))
    assert (a.aspects["helpfulness"].n, a.aspects["helpfulness"].na, a.failed, a.items) == (4, 1, 1, 6)
    assert a.words == pytest.approx((5 * 3 + 2) / 6)
    assert a.groups["topics"]["finance"]["depth"].mean == pytest.approx(2.5)
    assert build_report(load_verdicts(out), na="five").models[0].aspects["clarity"].mean == pytest.approx(
        statistics.mean([5, 4, 5, 2, 3])
    )
    text = to_markdown(report, compare=True)
    assert text.index("| b |") > text.index("| a |")  # a (3.5) ranks above b (2.6)
    write_csv(report, tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert any(line.startswith("scores,a,,,helpfulness,3.5,") for line in lines)


def test_just_eval_files_give_just_evals_means(tmp_path):
    judged = [
        {
            "id": i,
            "input": "q",
            "output_cand": "word " * (i + 1),
            "generator_cand": "m",
            "eval_config": {"mode": "score_multi"},
            "parsed_result": {a: {"rationale": "r", "score": s} for a, s in zip(ASPECTS, scores)},
        }
        for i, scores in enumerate([["5", "4", "3", "N/A", "2"], ["4", "4", "5", "3", "N/A"], ["3", "5", "N/A", "4", "4"]])
    ] + [{"id": 3, "input": "q", "output_cand": "w", "generator_cand": "m", "result": "N/A"}]
    path = tmp_path / "judged.json"
    path.write_text(json.dumps(judged))
    # just-eval's own report: only items with parsed_result; "N/A" counted as 5.0; plain means
    expected = {
        a: statistics.mean(
            5.0 if r["parsed_result"][a]["score"] == "N/A" else float(r["parsed_result"][a]["score"]) for r in judged[:3]
        )
        for a in ASPECTS
    }
    model = build_report(load_verdicts(path), na="five").models[0]
    assert {a: model.aspects[a].mean for a in ASPECTS} == pytest.approx(expected)
    assert model.failed == 1
    skipped = build_report(load_verdicts(path)).models[0]
    assert skipped.aspects["depth"].mean == pytest.approx(3.5) and skipped.aspects["depth"].na == 1
    assert stat([], "skip").mean is None


def test_cli_judge_and_report(tmp_path, monkeypatch):
    def script(method, path, count, body):
        return 200, JSON, chat_reply(verdict_json(user_text(body)))

    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(json.dumps({"id": i, "instruction": f"Q{i}", "output": "z" * i, "generator": "g"}) + "\n" for i in range(5))
    )
    runner = CliRunner()
    with scripted_server(script) as (url, _):
        args = [
            "judge",
            "multi",
            str(answers),
            "--out",
            str(tmp_path / "v.jsonl"),
            "--judge-url",
            url,
            "--judge-model",
            "j",
            "--cache",
            str(tmp_path / "c.db"),
            "--concurrency",
            "3",
        ]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "5 scored, 0 failed" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "v.jsonl"), "--out", str(tmp_path / "r"), "--compare"])
    assert result.exit_code == 0, result.output
    assert "Leaderboard" in result.output and (tmp_path / "r" / "report.html").read_text().count("data:image/png") >= 1
    bad = runner.invoke(app, ["judge", "pairwise", str(answers), "--out", str(tmp_path / "p.jsonl")])
    assert bad.exit_code == 2 and "second file or as --baseline" in plain(bad.output)


def test_tag_mode_and_its_report(tmp_path):
    def script(method, path, count, body):
        query = re.search(r"\[Request begins\]\n(.*)\n\[Request ends\]", user_text(body), re.DOTALL).group(1)
        topic = "finance" if "money" in query else "stem"
        return 200, JSON, chat_reply(json.dumps({"task_types": ["info-seek"], "topics": [topic], "difficulty": "easy"}))

    work = [
        AnswerItem(id=str(i), query=q, answer="unused") for i, q in enumerate(["Save money?", "Why is ice cold?", "Lend money?"])
    ]
    with scripted_server(script) as (url, seen):
        Judge(HttpJudgeModel(url, "judge"), judge_mode("tag")).run(work, tmp_path / "tags.jsonl", concurrency=2)
    verdicts = {v.id: v for v in VerdictFile(tmp_path / "tags.jsonl").read()}
    assert verdicts["0"].labels == {"task_types": ["info-seek"], "topics": ["finance"], "difficulty": ["easy"]}
    report = build_report(list(verdicts.values()))
    assert report.tagged == 3 and report.tags["topics"] == {"finance": 2, "stem": 1}
    assert "## Tags: topics (3 queries)" in to_markdown(report)


def test_a_judge_that_stays_down_fails_items_with_the_reason(tmp_path):
    def script(method, path, count, body):
        return 503, JSON, b'{"error": {"message": "judge is down"}}'

    with scripted_server(script) as (url, seen):
        summary = Judge(HttpJudgeModel(url, "judge", max_retries=1), judge_mode("multi")).run(items(2), tmp_path / "v.jsonl")
    verdicts = VerdictFile(tmp_path / "v.jsonl").read()
    assert summary.failed == 2 and len(seen) == 4  # each item: one try and one retry
    assert all(v.status == "failed" and "judge is down" in v.error and not v.scores for v in verdicts)
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"id": 1, "instruction": "Q", "output": "A"}) + "\n")
    with scripted_server(script) as (url, seen):
        result = CliRunner().invoke(
            app,
            [
                "judge",
                "multi",
                str(answers),
                "--out",
                str(tmp_path / "c.jsonl"),
                "--judge-url",
                url,
                "--judge-model",
                "j",
                "--max-retries",
                "0",
                "--no-cache",
            ],
        )
    assert result.exit_code == 0 and "first error: judge j at" in plain(result.output) and "judge is down" in result.output
    report = CliRunner().invoke(app, ["report", str(tmp_path / "c.jsonl")])
    assert report.exit_code == 2 and "nothing to report: no scored verdicts" in plain(report.output)
    assert "1 failed (first error: judge j at" in plain(report.output)


def test_cli_errors_say_what_to_do(tmp_path):
    runner = CliRunner()
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"id": 1, "instruction": "Q", "output": "A"}) + "\n")
    (tmp_path / "broken.json").write_text("[{")
    cases = [
        (["judge", "score", str(answers), "--out", str(tmp_path / "v.jsonl")], "No such command 'score'"),
        (
            ["judge", "multi", str(answers), "--out", str(tmp_path / "v.jsonl"), "--judge-url", "http://127.0.0.1:9/v1"],
            "--judge-model",
        ),
        (["report", str(tmp_path / "missing.jsonl")], "file not found"),
        (["report", str(tmp_path / "broken.json")], "invalid JSON"),
        (["report", str(answers), "--na", "three"], "'three' is not one of 'skip', 'five'"),
        (["report", str(answers), "--formats", "pdf"], "unknown format(s): pdf"),
        (["judge", "mt-bench", str(answers), "--out", str(tmp_path / "m.jsonl")], "not MT-bench answers"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in plain(result.output), (args, result.output)


@pytest.mark.slow
def test_grammar_checked_token_by_token_replies_as_llama_cpp_s_sampler(smollm_path, monkeypatch):
    """The local judge's greedy grammar decoding checks the likeliest token first and filters the whole
    vocabulary only when the grammar refuses it: the same reply as llama.cpp's sampler chain."""
    from untuned.backends.llamacpp.engine import LlamaEngine

    model = LocalJudgeModel(smollm_path)
    messages = judge_mode("multi").messages("What is 2 + 2?", "2 + 2 = 4.")
    fast = model.reply(messages, judge_mode("multi").schema())
    monkeypatch.setattr(LlamaEngine, "greedy_here", False)
    native = model.reply(messages, judge_mode("multi").schema())
    model.close()
    assert fast == native and parse_reply(judge_mode("multi"), fast)["scores"]
