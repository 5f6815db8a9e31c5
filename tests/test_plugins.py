"""A plugin adds a benchmark and a judge mode, each in one file (tests/scripted: untuned_riddles.py,
untuned_brevity.py, registered by entry points): the command line, the pipeline, experiments and the report
take them as they take the built-in ones (docs/architecture.md's walkthroughs)."""

from __future__ import annotations

import json

from helpers import plain
from helpers.judges import JSON, chat_reply
from helpers.servers import scripted_server
from typer.testing import CliRunner

from untuned.benchmarks import benchmark_names
from untuned.cli import app
from untuned.generation import GenerationFile
from untuned.interop import load_verdicts
from untuned.judge.modes import mode_names
from untuned.report import build_report, to_markdown

runner = CliRunner()


def riddles(tmp_path):
    path = tmp_path / "riddles.jsonl"
    rows = [
        ("1", "word", "SCRIPT: @temperature @end"),
        ("2", "number", "SCRIPT: @temperature @end"),
        ("3", "word", "SCRIPT: short"),
    ]
    path.write_text("".join(json.dumps({"id": i, "kind": k, "riddle": r}) + "\n" for i, k, r in rows))
    return path


def judged(mode: str, judge, answers, tmp_path):
    """`untuned judge MODE answers` against the scripted judge server ``judge``: one request per answer."""
    verdicts = tmp_path / f"{mode}.jsonl"
    with scripted_server(judge) as (url, seen):
        args = ["judge", mode, str(answers), "--judge-url", url, "--judge-model", "j", "--out", str(verdicts), "--no-cache"]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(seen) == 3
    return verdicts


def brevity_judge(method, path, count, body):
    return 200, JSON, chat_reply(json.dumps({"brevity": {"rationale": "short enough", "score": "4"}}))


def test_a_plugins_benchmark_and_judge_mode_run_like_the_built_in_ones(tmp_path):
    assert "riddles" in benchmark_names() and "brevity" in mode_names()
    answers = tmp_path / "answers.jsonl"
    result = runner.invoke(
        app, ["generate", "riddles", "--data-file", str(riddles(tmp_path)), "--model", "scripted:r", "--out", str(answers)]
    )
    assert result.exit_code == 0, result.output
    assert "riddles: per-category temperatures (word 0.5)" in plain(result.output)  # the benchmark's own sampling
    outputs = {r.id: r.outputs[0].strip() for r in GenerationFile(answers).read()}
    assert outputs == {"1": "t=0.5", "2": "t=0", "3": "short"}
    verdicts = judged("brevity", brevity_judge, answers, tmp_path)
    report = build_report(load_verdicts(verdicts))
    (model,) = report.models
    assert model.aspects["brevity"].mean == 4 and model.aspects["brevity"].n == 3
    assert "brevity" in to_markdown(report)


def test_an_experiment_takes_the_plugins_benchmark_and_mode_by_name(tmp_path):
    from untuned.experiment import Experiment, read_plan

    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'name = "plug"\nprompts = ["helpful"]\n[[models]]\nname = "s"\nmodel = "scripted:r"\n'
        f'[[datasets]]\nname = "r"\ndataset = "riddles"\ndata_file = "{riddles(tmp_path)}"\ntags = ["word"]\n'
        f'[judge]\nurl = "URL"\nmodel = "j"\nmodes = ["brevity"]\n'
    )
    with scripted_server(brevity_judge) as (url, _):
        plan.write_text(plan.read_text().replace("URL", url))
        experiment = Experiment(read_plan(plan), tmp_path / "out")
        assert [row["items"] for row in experiment.describe()] == [2]  # cut by the benchmark's own tags
        files = experiment.run()
    assert [f.name for f in files] == ["brevity.jsonl"] and len(load_verdicts(files[0])) == 2


def refusal_judge(method, path, count, body):
    asked = json.loads(body)["messages"][-1]["content"]
    return 200, JSON, chat_reply(json.dumps({"rationale": "r", "refused": "yes" if "t=0.5" in asked else "no"}))


def test_a_judge_mode_of_a_new_shape_brings_its_own_report_section_in_one_file(tmp_path):
    """untuned_refusals.py: its own record (a yes/no), schema, reader and report section; nothing in untuned names it."""
    from pathlib import Path

    import untuned

    assert "refusal" in mode_names()
    source = Path(untuned.__file__).parent
    assert not [
        p
        for p in source.rglob("*")
        if p.is_file()
        and p.suffix in (".py", ".html")
        and any(n in p.read_text() for n in ('"refusal"', '"refusals"', "Refusal"))
    ]
    answers = tmp_path / "answers.jsonl"
    result = runner.invoke(
        app, ["generate", "riddles", "--data-file", str(riddles(tmp_path)), "--model", "scripted:r", "--out", str(answers)]
    )
    assert result.exit_code == 0, result.output
    verdicts = judged("refusal", refusal_judge, answers, tmp_path)
    loaded = load_verdicts(verdicts)
    assert sorted(v.refused for v in loaded) == [False, False, True]  # its own record, read back
    report = build_report(loaded)
    assert not report.models and not report.pairwise  # no scores: nothing in the built-in sections
    (table,) = report.tables
    assert table.section == "refusals" and table.rows == [
        {"model": table.rows[0]["model"], "answers": 3, "refused": 1, "rate": 1 / 3}
    ]
    assert "## Refusals (share of answers that refuse)" in to_markdown(report) and "| 0.333 |" in to_markdown(report)
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(verdicts), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = next(out.glob("*.html")).read_text()
    assert "Refusals (share of answers that refuse)" in html and "<td>0.3333333333333333</td>" in html
    assert (next(out.glob("*-refusals.csv"))).read_text().splitlines()[1].endswith(",3,1,0.3333333333333333")


def test_a_plugin_backend_declares_its_own_settings_and_they_are_checked(tmp_path):
    """The scripted backend's Options record (shout): taken from the command line and a plan, a name it does not
    declare or a bad value refused by name, and a built-in backend refuses any."""
    answers = tmp_path / "answers.jsonl"
    base = ["generate", "riddles", "--data-file", str(riddles(tmp_path)), "--model", "scripted:r"]
    result = runner.invoke(app, [*base, "--backend-option", "shout=true", "--out", str(answers)])
    assert result.exit_code == 0, result.output
    assert {r.outputs[0].strip() for r in GenerationFile(answers).read()} == {"T=0.5", "T=0", "SHORT"}
    result = runner.invoke(app, [*base, "--backend-option", "whisper=1", "--out", str(tmp_path / "x.jsonl")])
    assert (
        result.exit_code == 2
        and "scripted backend has no setting 'whisper' (--backend-option); its own settings are shout" in plain(result.output)
    )
    result = runner.invoke(app, [*base, "--backend-option", "shout=loud", "--out", str(tmp_path / "y.jsonl")])
    assert result.exit_code == 2 and "setting 'shout' (--backend-option): Input should be a valid boolean" in plain(result.output)
    result = runner.invoke(
        app,
        [
            "generate",
            "riddles",
            "--data-file",
            str(riddles(tmp_path)),
            "--backend-option",
            "a=1",
            "--out",
            str(tmp_path / "z.jsonl"),
        ],
    )
    assert result.exit_code == 2 and "llama.cpp backend does not use backend_options (--backend-option)" in plain(result.output)
    from untuned.experiment.plan import ModelPlan

    plan = ModelPlan.model_validate({"name": "s", "model": "scripted:r", "backend_options": {"shout": True}}).run_plan()
    assert dict(plan.loading.backend_options) == {"shout": True}


def test_a_mode_taking_an_unregistered_input_kind_and_a_malformed_backend_option_are_refused_by_name():
    import pytest

    from untuned.backends import LoadOptions
    from untuned.errors import UntunedError
    from untuned.pipeline.inputs import input_kind

    with pytest.raises(UntunedError, match=r"no input kind 'slides' is registered \(known: answers, queries, mt-bench\)"):
        input_kind("slides")
    with pytest.raises(ValueError, match="backend option 'shout' is not NAME=VALUE"):
        LoadOptions(backend_options=["shout"])
    assert LoadOptions(backend_options=["n=3", "name=x", "on=true"]).backend_options == (("n", 3), ("name", "x"), ("on", True))
