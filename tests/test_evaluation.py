"""The paper's evaluation end to end on real HTTP judges scripted for the test: MT-bench grading,
win rates against a baseline, paired comparisons, judge diagnostics and calibration; FastChat's and
AlpacaEval's files read on small fixtures written here."""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.judges import JSON, chat_reply, user_text
from helpers.servers import scripted_server
from typer.testing import CliRunner

from untuned.benchmarks.mt_bench import MtBenchItem, attach_references, category_of
from untuned.cli import app
from untuned.generation import GenerationFile
from untuned.interop import load_verdicts
from untuned.interop.fastchat import read_mt_bench_answers, read_references
from untuned.judge import HttpJudgeModel, Judge, Verdict, VerdictFile, judge_mode
from untuned.judge.calibration import PUBLISHED
from untuned.judge.mode import ASPECTS, PAIRWISE_ASPECTS
from untuned.judge.verdicts import make_verdict
from untuned.report import build_report, plots, to_html, to_markdown
from untuned.stats import win_rate

runner = CliRunner()


def _between(text: str, label: str) -> str:
    return re.search(rf"\[{re.escape(label)} begins\]\n(.*?)\n\[{re.escape(label)} ends\]", text, re.DOTALL).group(1)


PROMPTS: list[str] = []


def mt_bench_judge(method, path, count, body):
    """Scores an answer by its word count (at most 10); replies to "LOOSE" answers in FastChat's [[n]] style."""
    text = user_text(body)
    PROMPTS.append(text)
    if "Rate only the assistant's answer in turn 2" in text:
        assert "[User, turn 1 begins]" in text and "[Assistant, turn 1 begins]" in text  # the whole conversation
        answer = _between(text, "Assistant, turn 2 (the answer to rate)")
    else:
        answer = _between(text, "Assistant's answer")
    score = min(10, len(answer.split()))
    if "LOOSE" in answer:
        return 200, JSON, chat_reply(f"The assistant did fine.\n\nRating: [[{score}]]")
    return 200, JSON, chat_reply(json.dumps({"rationale": f"{score} words", "score": str(score)}))


def mt_items() -> list[MtBenchItem]:
    return [
        MtBenchItem(
            id="81", turns=["Write a poem.", "Shorter."], outputs=["one two three", "one"], category="writing", generator="m"
        ),
        MtBenchItem(
            id="111",
            turns=["What is 2+2?", "And 3+3?"],
            outputs=["four is it", "six LOOSE a b c d e f g h i"],
            category="math",
            generator="m",
        ),
    ]


def test_mt_bench_turns_references_and_loose_replies(tmp_path):
    with pytest.raises(Exception, match="no reference answer \\(111\\)"):
        attach_references(mt_items(), None)
    items = attach_references(mt_items(), {"111": ["4", "6"]})
    out = tmp_path / "mt.jsonl"
    PROMPTS.clear()
    with scripted_server(mt_bench_judge) as (url, seen):
        summary = Judge(HttpJudgeModel(url, "judge"), judge_mode("mt-bench")).run(items, out)
    assert summary.done == 2 and len(seen) == 4  # one request per turn
    verdicts = {v.id: v for v in VerdictFile(out).read()}
    assert verdicts["81"].scores == {"turn_1": 3, "turn_2": 1} and verdicts["81"].reference == []
    assert verdicts["111"].scores == {"turn_1": 3, "turn_2": 10} and verdicts["111"].reference == ["4", "6"]
    assert verdicts["111"].tags == {"category": ["math"]}
    math_prompts = [p for p in PROMPTS if "What is 2+2?" in p]
    assert len(math_prompts) == 2 and all("[Reference answer" in p for p in math_prompts)
    assert not any("Reference" in p for p in PROMPTS if "poem" in p)
    report = build_report(VerdictFile(out).read())
    (m,) = report.mt_bench
    assert m.turns == {"turn_1": 3.0, "turn_2": 5.5} and m.overall == pytest.approx(statistics.mean([3, 1, 3, 10]))
    assert m.categories == {"math": 6.5, "writing": 2.0}
    assert "## MT-bench" in to_markdown(report) and "MT-bench by category" in plots(report)


def test_a_failed_turn_2_keeps_turn_1s_score_as_fastchat_keeps_its_row(tmp_path):
    """The judge fails on turn 2 of question 81 (no score in any reply): the verdict is failed and retried
    on the next run, and the report counts its turn 1, as FastChat's show_result counts turn 1's row."""

    def judge(method, path, count, body):
        text = user_text(body)
        if "Rate only the assistant's answer in turn 2" in text and "Write a poem." in text:
            return 200, JSON, chat_reply("I cannot decide.")
        return mt_bench_judge(method, path, count, body)

    out = tmp_path / "mt.jsonl"
    items = attach_references(mt_items(), {"111": ["4", "6"]})
    with scripted_server(judge) as (url, _):
        Judge(HttpJudgeModel(url, "judge"), judge_mode("mt-bench"), parse_retries=0).run(items, out)
    verdicts = {v.id: v for v in VerdictFile(out).read()}
    assert verdicts["81"].status == "failed" and verdicts["81"].scores == {"turn_1": 3}
    assert verdicts["81"].error.startswith("turn_2: ")
    (m,) = build_report(list(verdicts.values())).mt_bench
    assert m.turns == {"turn_1": 3.0, "turn_2": 10.0} and m.turn_counts == {"turn_1": 2, "turn_2": 1}
    assert m.overall == pytest.approx(statistics.mean([3, 3, 10])) and m.failed == 1


def test_cli_generate_mt_bench_uses_fastchats_temperatures_unless_told(tmp_path):
    questions = tmp_path / "q.jsonl"
    rows = [(81, "writing"), (111, "math"), (141, "stem")]
    questions.write_text(
        "".join(json.dumps({"question_id": q, "category": c, "turns": ["SCRIPT: @temperature @end"] * 2}) + "\n" for q, c in rows)
    )
    base = ["generate", "mt-bench", "--data-file", str(questions), "--model", "scripted:t"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 0, result.output
    answers = {r.id: [o.strip() for o in r.outputs] for r in GenerationFile(tmp_path / "a.jsonl").read()}
    assert answers == {"81": ["t=0.7"] * 2, "111": ["t=0"] * 2, "141": ["t=0.1"] * 2}
    result = runner.invoke(app, [*base, "--temperature", "0.3", "--out", str(tmp_path / "b.jsonl")])
    assert result.exit_code == 0, result.output
    records = GenerationFile(tmp_path / "b.jsonl").read()
    assert {o.strip() for r in records for o in r.outputs} == {"t=0.3"} and records[0].temperature_by_category == {}
    items = read_mt_bench_answers(tmp_path / "a.jsonl")
    assert [(i.id, i.category, len(i.outputs)) for i in items] == [("81", "writing", 2), ("111", "math", 2), ("141", "stem", 2)]


def test_cli_judge_mt_bench_with_fastchat_files_and_report(tmp_path, fixture_data):
    answers = tmp_path / "model_answer.jsonl"  # FastChat's answer format
    answers.write_text(
        "".join(
            json.dumps({"question_id": q, "model_id": "fc-model", "choices": [{"index": 0, "turns": ["a b c d e", "a b"]}]})
            + "\n"
            for q in (101, 141)
        )
    )
    out = tmp_path / "v.jsonl"
    args = [
        "judge",
        "mt-bench",
        str(answers),
        "--out",
        str(out),
        "--questions",
        str(fixture_data / "mt_bench_questions.jsonl"),
        "--no-cache",
    ]
    with scripted_server(mt_bench_judge) as (url, seen):
        missing = runner.invoke(app, [*args, "--judge-url", url, "--judge-model", "j"])
        assert missing.exit_code == 2 and "--references" in missing.output and not seen
        references = str(fixture_data / "mt_bench_reference_gpt-4.jsonl")
        result = runner.invoke(app, [*args, "--references", references, "--judge-url", url, "--judge-model", "j"])
    assert result.exit_code == 0, result.output
    verdicts = {v.id: v for v in VerdictFile(out).read()}
    assert verdicts["101"].reference == read_references(references)["101"] and verdicts["141"].reference == []
    assert verdicts["101"].turns[0].startswith("Imagine you are participating in a race")
    report = runner.invoke(app, ["report", str(out)])
    assert "| fc-model | j | 2 | 5.00 | 2.00 | 3.50 | 0 |" in report.output


def fastchat_rows() -> list[dict]:
    rows = []
    for model, scores in (("m1", {81: (8, 6), 111: (3, -1), 151: (9, 7)}), ("m2", {81: (5, 5), 111: (2, 2), 151: (7.5, 6)})):
        for qid, turns in scores.items():
            for turn, score in enumerate(turns, start=1):
                prompt = "single-v1" if turn == 1 else "single-v1-multi-turn"
                rows.append(
                    {
                        "question_id": qid,
                        "model": model,
                        "judge": ["gpt-4", prompt],
                        "user_prompt": "…",
                        "judgment": f"Rating: [[{score}]]",
                        "score": score,
                        "turn": turn,
                        "tstamp": 0,
                    }
                )
    return rows


def test_fastchat_judgments_give_fastchats_means(tmp_path):
    path = tmp_path / "gpt-4_single.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in fastchat_rows()))
    report = build_report(load_verdicts(path))
    m1, m2 = report.mt_bench
    # FastChat's show_result: rows with score -1 dropped, then means per turn and over all rows
    assert m1.turns == {"turn_1": pytest.approx(statistics.mean([8, 3, 9])), "turn_2": pytest.approx(statistics.mean([6, 7]))}
    assert m1.overall == pytest.approx(statistics.mean([8, 6, 3, 9, 7])) and m1.turn_counts == {"turn_1": 3, "turn_2": 2}
    assert m2.overall == pytest.approx(statistics.mean([5, 5, 2, 2, 7.5, 6])) and m2.categories["humanities"] == 6.75
    assert (category_of(81), category_of(111), category_of(160), category_of(7)) == ("writing", "math", "humanities", None)


def annotations() -> list[dict]:
    preferences = [2.0, "1.0", 1.5, None, 0, "1.8", 1.2, 2]
    return [
        {
            "instruction": f"Q{i}",
            "output_1": "b" * (100 + 10 * i),
            "generator_1": "gpt4_turbo",
            "output_2": "m" * (80 + 37 * i),
            "generator_2": "my-model",
            "annotator": "weighted_alpaca_eval_gpt4_turbo",
            "preference": p,
        }
        for i, p in enumerate(preferences)
    ]


def test_alpaca_eval_annotations_give_the_leaderboards_numbers(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(annotations()))
    report = build_report(load_verdicts(path))
    (row,) = report.win_rates
    # by hand, as AlpacaEval's leaderboard: None dropped, 0 is a draw, strings are numbers
    kept = [2.0, 1.0, 1.5, 1.5, 1.8, 1.2, 2.0]
    shifted = [p - 1 for p in kept]
    assert (row.model, row.baseline) == ("my-model", "gpt4_turbo")
    assert row.rate.win_rate == pytest.approx(100 * statistics.mean(shifted))
    assert row.rate.standard_error == pytest.approx(100 * statistics.stdev(shifted) / len(kept) ** 0.5)
    assert (row.rate.n_wins, row.rate.n_wins_base, row.rate.n_draws, row.rate.n_total) == (3, 2, 2, 7)
    assert row.rate.discrete_win_rate == pytest.approx(100 * statistics.mean([1, 0, 0.5, 0.5, 1, 0, 1]))
    assert row.rate.length_controlled is None and row.rate.lc_missing == "fewer than 10 rows"  # see test_alpaca_eval
    assert row.flip_rate is None  # AlpacaEval's annotations keep one order


def test_cli_pairwise_against_a_baseline_win_rate_and_flips(tmp_path):
    def longer_or_first(method, path, count, body):
        text = user_text(body)
        a, b = _between(text, "Answer A"), _between(text, "Answer B")
        winners = {x: "A" for x in ASPECTS}  # position bias on every aspect...
        winners["overall"] = "A" if len(a) > len(b) else "B"  # ...but a consistent overall verdict
        return 200, JSON, chat_reply(json.dumps({x: {"rationale": "r", "winner": w} for x, w in winners.items()}))

    model, base = tmp_path / "model.jsonl", tmp_path / "base.jsonl"
    model.write_text(
        "".join(
            json.dumps({"id": i, "instruction": f"Q{i}", "output": "x" * (10 + 20 * i), "generator": "mine"}) + "\n"
            for i in range(7)
        )
    )  # no baseline answer for id 6
    base.write_text(
        "".join(json.dumps({"id": i, "instruction": f"Q{i}", "output": "y" * 55, "generator": "ref"}) + "\n" for i in range(6))
    )
    out = tmp_path / "p.jsonl"
    with scripted_server(longer_or_first) as (url, seen):
        both = runner.invoke(app, ["judge", "pairwise", str(model), str(base), "--baseline", str(base), "--out", str(out)])
        assert both.exit_code == 2 and "one of them" in both.output
        result = runner.invoke(
            app,
            [
                "judge",
                "pairwise",
                str(model),
                "--baseline",
                str(base),
                "--out",
                str(out),
                "--judge-url",
                url,
                "--judge-model",
                "j",
                "--no-cache",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "1 items have no second answer and were left out." in result.output
    verdicts = sorted(VerdictFile(out).read(), key=lambda v: v.id)
    assert [v.preference for v in verdicts] == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]  # 10..110 vs 55 chars; 2 = ours
    assert set(verdicts[0].winners) == set(PAIRWISE_ASPECTS) and verdicts[0].winners["helpfulness"] == "tie"
    result = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    expected = win_rate([v.preference for v in verdicts])
    assert f"{expected.win_rate:.1f} ± {expected.standard_error:.1f}" in result.output
    assert "the judge follows the position more than the answers" not in result.output  # overall flips: none
    report = build_report(verdicts)
    helpfulness = next(p for p in report.pairwise if p.aspect == "helpfulness")
    assert (helpfulness.flips, helpfulness.both_orders) == (6, 6)
    rows = list(csv.reader((tmp_path / "r" / "report-evaluation.csv").open()))
    assert ["win-rate", "mine", "ref", "overall", "n_total", "6"] in rows
    assert ["win-rate", "mine", "ref", "overall", "flip_rate", "0.0"] in rows


def _verdict(model: str, ident: int, scores: dict, answer: str = "an answer", mode: str = "multi") -> Verdict:
    return make_verdict(
        id=str(ident),
        mode=mode,
        template=f"{mode}@1",
        judge="j",
        status="scored",
        generator=model,
        query=f"Q{ident}",
        answer=answer,
        scores=scores,
    )


def test_report_compare_paired_tests_in_markdown_csv_and_html(tmp_path):
    a_scores = [4, 5, 4, 5, 3, 4, 5, 4, 5, 4, 3, 5]
    b_scores = [3, 3, 2, 4, 2, 3, 3, 3, 4, 2, 2, 3]
    a = [_verdict("a", i, {"helpfulness": s, "clarity": 3 + i % 3}) for i, s in enumerate(a_scores)]
    b = [_verdict("b", i, {"helpfulness": s, "clarity": 3 + (i + 1) % 3}) for i, s in enumerate(b_scores)]
    b.append(_verdict("b", 99, {"helpfulness": 1, "clarity": 1}))  # not judged for a: left out of the pairing
    mt = [
        _verdict(m, i, {"turn_1": s, "turn_2": s - 1}, mode="mt-bench")
        for m, d in (("a", 2), ("b", 0))
        for i, s in enumerate([5 + d, 6 + d, 4 + d, 7 + d, 5 + d, 6 + d, 8 + d])
    ]
    VerdictFile(tmp_path / "a.jsonl").append(*a, *mt[:7])
    VerdictFile(tmp_path / "b.jsonl").append(*b, *mt[7:])
    result = runner.invoke(
        app, ["report", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--compare", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert "## a vs b (just-eval, paired on common items)" in text and "## a vs b (mt-bench, paired on common items)" in text
    helpfulness = next(line for line in text.splitlines() if line.startswith("| helpfulness | 12 |"))
    assert helpfulness.endswith("significantly better (n = 12) |")
    assert f"{statistics.mean(x - y for x, y in zip(a_scores, b_scores)):+.2f}" in helpfulness
    assert next(line for line in text.splitlines() if line.startswith("| clarity | 12 |")).endswith("no evidence (n = 12) |")
    assert next(line for line in text.splitlines() if line.startswith("| turn_1 | 7 |")).endswith(
        "significantly better (n = 7) |"
    )
    rows = list(csv.reader((tmp_path / "r" / "report-evaluation.csv").open()))
    assert ["compare-just-eval", "a", "b", "helpfulness", "verdict", "significantly better"] in rows
    assert "significantly better" in (tmp_path / "r" / "report.html").read_text()


def test_a_judge_that_gives_one_score_is_flagged_not_plotted(tmp_path):
    flat = [_verdict("m", i, {a: 4 for a in ASPECTS}, answer="word " * (i + 1)) for i in range(6)]
    report = build_report(flat)
    assert len(report.warnings) == len(ASPECTS) and "carry no information" in report.warnings[0]
    assert "Scores per aspect" not in plots(report)
    markdown = to_markdown(report)  # one short table, not a line per aspect
    assert f"## Read first: {len(ASPECTS)} score(s) piled on one value" in markdown and "> **Warning**" not in markdown
    assert "| m | helpfulness | 4 | 100% | 6 | no information: left out of the plots |" in markdown
    assert "data:image/png" not in to_html(report) and "uninformative" in to_html(report)
    varied = [v.model_copy(update={"scores": {**v.scores, "depth": 1 + i % 5}}) for i, v in enumerate(flat)]
    report = build_report(varied)
    assert "Scores per aspect" in plots(report) and len(report.warnings) == len(ASPECTS) - 1
    depth = next(d for d in report.diagnostics if d.aspect == "depth")
    assert depth.length_spearman is not None and not depth.uninformative


def test_cli_calibrate_against_published_verdicts(tmp_path):
    published = [
        {
            "id": i,
            "input": f"Question {i}?",
            "output_cand": f"Answer {i}.",
            "generator_cand": "gpt-3.5-turbo-0301",
            "eval_config": {"mode": "score_multi", "gpt": "gpt-4-1106-preview"},
            "parsed_result": {a: {"rationale": "r", "score": str(1 + (i * (k + 1)) % 5)} for k, a in enumerate(ASPECTS)},
        }
        for i in range(8)
    ]
    path = tmp_path / "published.json"
    path.write_text(json.dumps(published))
    truth = {row["input"]: row["parsed_result"] for row in published}

    def judge(method, path_, count, body):  # agrees on helpfulness, says 3 to everything else
        query = _between(user_text(body), "Request")
        scores = {a: truth[query]["helpfulness"]["score"] if a == "helpfulness" else "3" for a in ASPECTS}
        return 200, JSON, chat_reply(json.dumps({a: {"rationale": "r", "score": s} for a, s in scores.items()}))

    with scripted_server(judge) as (url, seen):
        args = [
            "judge",
            "calibrate",
            "--published",
            str(path),
            "--sample",
            "6",
            "--out",
            str(tmp_path / "c.jsonl"),
            "--judge-url",
            url,
            "--judge-model",
            "cheap",
            "--no-cache",
        ]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(seen) == 6 and "cheap against gpt-4-1106-preview on 6 published items" in result.output
    assert re.search(r"helpfulness\s+│\s+6\s+│\s+\+1\.00\s+│\s+100%\s+│\s+100%\s+│\s+\+1\.00", result.output)
    assert re.search(r"clarity\s+│\s+6\s+│\s+–", result.output) and "same score" in result.output


def walkthrough_judge(method, path, count, body):
    """Answers whatever the README's walkthrough asks, in the form each template wants, scores from lengths."""
    text = user_text(body)
    if "[Answer A begins]" in text:
        winner = "A" if len(_between(text, "Answer A")) >= len(_between(text, "Answer B")) else "B"
        return 200, JSON, chat_reply(json.dumps({a: {"rationale": "r", "winner": winner} for a in PAIRWISE_ASPECTS}))
    if "the answer to rate" in text or "[Assistant's answer begins]" in text:
        return 200, JSON, chat_reply(json.dumps({"rationale": "r", "score": str(1 + len(text) % 10)}))
    aspects = ("safety",) if "- safety:" in text else ASPECTS
    score = 1 + len(_between(text, "Answer")) % 5
    return 200, JSON, chat_reply(json.dumps({a: {"rationale": "r", "score": str(score)} for a in aspects}))


@pytest.mark.slow
def test_readme_evaluation_walkthrough_runs_as_written(tmp_path, fixture_data):
    """Every command of README's "Evaluate like the paper", pasted into bash as a user would: the
    generating model is the scripted one (UNTUNED_MODEL; its tokens are bytes, so UNTUNED_N_CTX gives
    MT-bench's second turns room), the judge a scripted server ($JUDGE), the
    published verdicts a fixture in the download cache. Only the line that sets $JUDGE is changed."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Evaluate like the paper", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    script = "set -euo pipefail\n" + "\n".join(blocks)
    (tmp_path / "shared").symlink_to(fixture_data.parent)  # so that the README's ../shared/data resolves
    work = tmp_path / "work"
    work.mkdir()
    published = [
        {
            "id": i,
            "input": f"Question {i}?",
            "output_cand": "An answer. " * (1 + i % 7),
            "generator_cand": "gpt-3.5-turbo-0301",
            "eval_config": {"mode": "score_multi", "gpt": "gpt-4-1106-preview"},
            "parsed_result": {a: {"rationale": "r", "score": str(1 + (i + k) % 5)} for k, a in enumerate(ASPECTS)},
        }
        for i in range(40)
    ]
    cache = tmp_path / "cache" / "untuned" / "published"
    cache.mkdir(parents=True)
    (cache / PUBLISHED.rsplit("/", 1)[-1]).write_text(json.dumps(published))
    with scripted_server(walkthrough_judge) as (url, seen):
        script = script.replace('export JUDGE="', f'export JUDGE="--judge-url {url} --judge-model scripted-judge" #', 1)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env = {
            **os.environ,
            "UNTUNED_MODEL": "scripted:walk",
            "UNTUNED_N_CTX": "16384",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "UNTUNED_CACHE_DIR": str(tmp_path / "cache" / "untuned"),
            "PATH": path,
            "COLUMNS": "200",
        }
        result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "scripted-judge against gpt-4-1106-preview on 30 published items" in result.stdout
    made = {p.relative_to(work / "eval").as_posix() for p in (work / "eval").rglob("*") if p.is_file()}
    assert {"urial.multi.jsonl", "mistral.multi.jsonl", "urial.safety.jsonl", "mt.judged.jsonl", "vs-gpt4.jsonl"} <= made
    assert {"just-eval/report.md", "mt-bench/report.md", "alpaca/report.md"} <= made
    mt = (work / "eval" / "mt-bench" / "report.md").read_text()
    assert "## MT-bench" in mt and len(VerdictFile(work / "eval" / "mt.judged.jsonl").read()) == 80
    assert "(just-eval, paired on common items)" in (work / "eval" / "just-eval" / "report.md").read_text()
    assert "| LC |" in (work / "eval" / "alpaca" / "report.md").read_text()


def test_fastchat_duplicates_are_averaged_as_show_result_does(tmp_path):
    rows = [(81, 1, 8), (81, 1, 4), (81, 2, 6), (82, 1, 9), (82, 2, -1)]  # question 81 turn 1 judged twice
    path = tmp_path / "gpt-4_single.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": q, "model": "m", "judge": ["gpt-4", "single-v1"], "turn": t, "score": s, "judgment": "j"})
            + "\n"
            for q, t, s in rows
        )
    )
    report = build_report(load_verdicts(path))
    (m,) = report.mt_bench
    # FastChat: mean over every row with a score other than -1, per turn and over all
    assert m.turns["turn_1"] == pytest.approx((8 + 4 + 9) / 3) and m.turns["turn_2"] == pytest.approx(6)
    assert m.overall == pytest.approx((8 + 4 + 9 + 6) / 4) and m.duplicates == 1 and m.questions == 2
    assert any("more than once" in w for w in report.warnings)


def test_one_unreadable_just_eval_score_costs_only_its_aspect(tmp_path):
    rows = [
        {
            "id": i,
            "input": f"Q{i}",
            "output_cand": "a",
            "generator_cand": "g",
            "eval_config": {"mode": "score_multi"},
            "parsed_result": {
                "helpfulness": {"rationale": "r", "score": "four and a half" if i == 1 else "4"},
                "clarity": {"rationale": "r", "score": "3"},
            },
        }
        for i in range(3)
    ]
    path = tmp_path / "judged.json"
    path.write_text(json.dumps(rows))
    report = build_report(load_verdicts(path))
    (m,) = report.models
    assert (m.aspects["helpfulness"].n, m.aspects["clarity"].n, m.unreadable) == (2, 3, {"helpfulness": 1})
    assert any("could not be read" in w for w in report.warnings)


def test_compare_honours_na_and_many_models_get_a_compact_matrix():
    scores = {"a": [4, 5, 4, 5, 4, 5, 4, 5, 4, 5], "b": [2, 3, 2, 3, 2, 3, 2, 3, 2, 3], "c": [3] * 10}
    verdicts = [
        _verdict(m, i, {"helpfulness": s, "depth": None if (m, i) == ("b", 0) else s})
        for m, values in scores.items()
        for i, s in enumerate(values)
    ]
    skip = {(c.a, c.b, r.aspect): r for c in build_report(verdicts, compare=True).comparisons for r in c.rows}
    five = {(c.a, c.b, r.aspect): r for c in build_report(verdicts, compare=True, na="five").comparisons for r in c.rows}
    assert skip[("a", "b", "depth")].n == 9 and five[("a", "b", "depth")].n == 10
    assert five[("a", "b", "depth")].mean_b == pytest.approx((5 + 3 + 2 + 3 + 2 + 3 + 2 + 3 + 2 + 3) / 10)
    text = to_markdown(build_report(verdicts, compare=True), compare=True, compact=True)
    assert "### just-eval: helpfulness" in text and "| a |  | + (n=10) | + (n=10) |" in text and "## a vs b" not in text
    assert "## a vs b" in to_markdown(build_report(verdicts, compare=True), compare=True)


def test_pairwise_table_and_win_rate_count_by_one_rule():
    """A win in one order and a tie in the other: a win (preference 1.75) in both the table and the
    win-rate counts, also for a file written when the table called it a tie."""
    old = make_verdict(
        id="1",
        mode="pairwise",
        template="pairwise@1",
        judge="j",
        status="scored",
        generator="a",
        generator_b="b",
        query="q",
        answer="x",
        answer_b="y",
        winners={"overall": "tie"},
        orders=[{"overall": "A"}, {"overall": "tie"}],
        preference=1.75,
    )
    split = old.model_copy(update={"id": "2", "orders": [{"overall": "A"}, {"overall": "B"}], "preference": 1.5})
    report = build_report([old, split])
    (p,) = report.pairwise
    (w,) = report.win_rates
    assert (p.wins, p.ties, p.losses) == (1, 1, 0) and (w.rate.n_wins, w.rate.n_draws, w.rate.n_wins_base) == (1, 1, 0)
