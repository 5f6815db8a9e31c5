"""`untuned experiment PLAN`: a grid of 2 prompt sets × K ∈ {0, 1, 3} × 10 items, on the scripted model
with a scripted judge server, killed at random mid-run three times and resumed with nothing lost or
duplicated; the plan checked before anything runs; the report with its K curve."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXTURES, ROOT, plain
from helpers.judges import JSON, chat_reply, user_text
from helpers.servers import scripted_server
from typer.testing import CliRunner

from untuned.cli import app
from untuned.judge import ASPECTS, VerdictFile

ITEMS = 10


def judge(method, path, count, body):
    """Scores every aspect by the answer's length (1-5): a judge that sees the answers, quickly."""
    text = user_text(body)
    score = 1 + len(text) % 5
    return 200, JSON, chat_reply(json.dumps({a: {"rationale": "r", "score": str(score)} for a in ASPECTS}))


def plan(tmp_path: Path, judge_url: str) -> Path:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "instruction": f"SCRIPT: answer {i} @delay=0.05 @repeat=8:x"}) + "\n"
                            for i in range(ITEMS)))  # fmt: skip
    path = tmp_path / "plan.toml"
    path.write_text(f"""name = "grid"
prompts = ["helpful:k=0,1,3", "safe:k=0,1,3"]

[[models]]
name = "scripted"
model = "scripted:exp"
max_tokens = 16
concurrency = 2

[[datasets]]
name = "items"
dataset = "json"
data_file = "{data}"

[judge]
url = "{judge_url}"
model = "scripted-judge"
modes = ["multi"]
concurrency = 2
""")
    return path


def test_plan_errors_name_the_key_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\nprompts = ["helpful"]\n\n[[models]]\nname = "m"\nmax_token = 3\n\n'
                    '[[datasets]]\nname = "d"\ndataset = "just-eval"\n')  # fmt: skip
    result = CliRunner().invoke(app, ["experiment", str(path), "--dry-run"])
    assert result.exit_code == 2 and "line 6: models.0.max_token: Extra inputs are not permitted" in plain(result.output)
    path.write_text(
        'name = "x"\nprompts = ["helpful:k=0,9"]\n[[models]]\nname = "m"\n[[datasets]]\nname = "d"\ndataset = "json"\n'
    )
    result = CliRunner().invoke(app, ["experiment", str(path), "--dry-run"])
    assert result.exit_code == 2 and "fewer than k=9" in plain(result.output)


def test_a_grid_killed_three_times_resumes_with_nothing_lost_or_duplicated(tmp_path):
    rng = random.Random(22)
    with scripted_server(judge) as (url, _):
        path = plan(tmp_path, url)
        out = tmp_path / "exp"
        dry = CliRunner().invoke(app, ["experiment", str(path), "--out", str(out), "--dry-run"])
        assert dry.exit_code == 0 and "60 generations and 60 judge requests planned" in plain(dry.output)
        command = [sys.executable, "-m", "untuned", "experiment", str(path), "--out", str(out)]
        for _ in range(3):  # killed at a random moment, three times
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(1.5, 4.0))
            process.send_signal(signal.SIGKILL)
            process.wait()
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 6
    for cell in cells:
        answers = [json.loads(line)["id"] for line in (cell / "answers.jsonl").read_text().splitlines()]
        verdicts = [v.id for v in VerdictFile(cell / "multi.jsonl").read()]
        assert sorted(answers) == sorted(set(answers)) == sorted(str(i) for i in range(ITEMS))
        assert sorted(verdicts) == sorted(set(verdicts)) == sorted(answers)  # judged once each, all of them
        assert (cell / "answers.just-eval.json").exists() and (cell / "answers.alpaca-eval.json").exists()
    report = (out / "report" / "report.md").read_text()
    assert "untuned/scripted-exp/helpful@k3" in report and "Paired comparisons (compact)" not in report
    assert (out / "report" / "k-curve.png").stat().st_size > 1000
    events = [json.loads(line)["event"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert events.count("start") == 4 and events[-1] == "reported"


@pytest.mark.slow
def test_readme_experiment_runs_as_written(tmp_path):
    """The README's experiment commands, pasted into bash from a clone's root: the bundled gemma and
    the bundled local judge, the plan in experiments/ as shipped (its data through ../shared/data)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Experiments: the paper's grids in one command", 1)[1].split("\n## ", 1)[0]
    script = "set -euo pipefail\n" + re.findall(r"```sh\n(.*?)```", section, re.DOTALL)[0]
    work = tmp_path / "untuned"
    (work / "experiments").mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "k-curve.toml", work / "experiments")
    (tmp_path / "shared").symlink_to(FIXTURES)  # so that the plan's ../shared/data resolves
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(["bash", "-c", script], cwd=work, env={**os.environ, "PATH": path, "COLUMNS": "200"},
                            capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "60 generations and 60 judge requests planned" in result.stdout
    assert (work / "k-curve" / "report" / "report.md").exists() and (work / "k-curve" / "report" / "k-curve.png").exists()
