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
from untuned.errors import UntunedError
from untuned.judge import ASPECTS, VerdictFile
from untuned.judge.mode import PAIRWISE_ASPECTS

ITEMS = 10


def judge(method, path, count, body):
    """Scores every aspect by the answer's length (1-5): a judge that sees the answers, quickly."""
    text = user_text(body)
    score = 1 + len(text) % 5
    return 200, JSON, chat_reply(json.dumps({a: {"rationale": "r", "score": str(score)} for a in ASPECTS}))


def plan(tmp_path: Path, judge_url: str) -> Path:
    data = tmp_path / "items.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": str(i), "instruction": f"SCRIPT: answer {i} @delay=0.05 @repeat=8:x"}) + "\n" for i in range(ITEMS)
        )
    )
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
    path.write_text(
        'name = "x"\nprompts = ["helpful"]\n\n[[models]]\nname = "m"\nmax_token = 3\n\n'
        '[[datasets]]\nname = "d"\ndataset = "just-eval"\n'
    )
    result = CliRunner().invoke(app, ["experiment", str(path), "--dry-run"])
    assert result.exit_code == 2 and "line 6: models.0.max_token: Extra inputs are not permitted" in plain(result.output)
    path.write_text(
        'name = "x"\nprompts = ["helpful:k=0,9"]\n[[models]]\nname = "m"\n[[datasets]]\nname = "d"\ndataset = "json"\n'
    )
    result = CliRunner().invoke(app, ["experiment", str(path), "--dry-run"])
    assert result.exit_code == 2 and "fewer than k=9" in plain(result.output)


@pytest.mark.slow
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
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        env={**os.environ, "PATH": path, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "30 generations and 30 judge requests planned" in result.stdout
    assert (work / "k-curve" / "report" / "report.md").exists() and (work / "k-curve" / "report" / "k-curve.png").exists()


def any_judge(method, path, count, body):
    """Answers each template in its form: pairwise (the longer answer wins), MT-bench (1-10), just-eval."""
    text = user_text(body)
    if "[Answer A begins]" in text:
        return 200, JSON, chat_reply(json.dumps({a: {"rationale": "r", "winner": "A"} for a in PAIRWISE_ASPECTS}))
    if "the answer to rate" in text or "[Assistant's answer begins]" in text:
        return 200, JSON, chat_reply(json.dumps({"rationale": "r", "score": str(1 + len(text) % 10)}))
    return judge(method, path, count, body)


def test_pairwise_against_a_baseline_and_mt_bench_cells(tmp_path):
    """Judging modes beside multi: pairwise against a baseline's answers (both orders) on the just-eval
    cells, MT-bench (each turn, references attached) on the MT-bench cell; each mode only where it fits."""
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "instruction": f"Question {i}?"}) + "\n" for i in range(3)))
    baseline = tmp_path / "baseline.jsonl"
    baseline.write_text(
        "".join(
            json.dumps({"id": str(i), "instruction": f"Question {i}?", "output": "A long baseline answer."}) + "\n"
            for i in range(3)
        )
    )
    with scripted_server(any_judge) as (url, seen):
        path = tmp_path / "plan.toml"
        path.write_text(f"""name = "modes"
prompts = ["helpful"]
shift = true
[[models]]
name = "scripted"
model = "scripted:modes"
max_tokens = 8
[[datasets]]
name = "items"
dataset = "json"
data_file = "{data}"
[[datasets]]
name = "mt"
dataset = "mt-bench"
data_file = "{FIXTURES / "data" / "mt_bench_questions.jsonl"}"
ids = ["101", "81"]
[judge]
url = "{url}"
model = "j"
modes = ["pairwise", "mt-bench"]
baseline = "{baseline}"
references = "{FIXTURES / "data" / "mt_bench_reference_gpt-4.jsonl"}"
""")
        out = tmp_path / "exp"
        dry = CliRunner().invoke(app, ["experiment", str(path), "--out", str(out), "--dry-run"])
        assert "10 judge requests planned" in plain(dry.output)  # 3 items x 2 orders + 2 questions x 2 turns
        result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    pairwise = VerdictFile(out / "cells" / "scripted__helpful__items" / "pairwise.jsonl").read()
    mt = {v.id: v for v in VerdictFile(out / "cells" / "scripted__helpful__mt" / "mt-bench.jsonl").read()}
    assert len(pairwise) == 3 and all(len(v.orders) == 2 for v in pairwise)
    assert set(mt) == {"101", "81"} and mt["101"].reference and not mt["81"].reference
    assert not (out / "cells" / "scripted__helpful__mt" / "pairwise.jsonl").exists()
    report = (out / "report" / "report.md").read_text()
    assert "## MT-bench" in report and "Win rate against the baseline" in report
    shift = (out / "report" / "shift.md").read_text()  # how far the URIAL prefix moves the base model, per cell
    assert "| scripted__helpful__items | – |" in shift and "| scripted__helpful__mt | – |" in shift


@pytest.mark.slow
def test_an_aligned_model_in_its_own_chat_template_beside_the_base(tmp_path, smollm_path):
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "instruction": f"Name a colour ({i})."}) + "\n" for i in range(2)))
    with scripted_server(judge) as (url, _):
        path = tmp_path / "plan.toml"
        path.write_text(f"""name = "aligned"
prompts = ["helpful:k=0,1"]
[[models]]
name = "base"
model = "scripted:base"
max_tokens = 6
[[models]]
name = "smollm"
model = "{smollm_path}"
chat_template = true
max_tokens = 6
[[datasets]]
name = "items"
dataset = "json"
data_file = "{data}"
[judge]
url = "{url}"
model = "j"
""")
        result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    cells = sorted(p.name for p in (tmp_path / "exp" / "cells").iterdir())
    assert cells == ["base__helpful@k0__items", "base__helpful@k1__items", "smollm__chat-template__items"]
    records = [json.loads(line) for line in (tmp_path / "exp" / "cells" / cells[2] / "answers.jsonl").read_text().splitlines()]
    assert {r["prompt_name"] for r in records} == {"chat-template"} and all(r["outputs"][0] for r in records)


def test_one_model_in_memory_at_a_time_and_none_left_open(tmp_path):
    """Cells run model by model: a model's backends are closed before the next one loads, and the
    last ones when the run ends, even when it ends by an error."""
    from untuned.backends import load_backend
    from untuned.experiment import Experiment, read_plan

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "instruction": f"SCRIPT: answer {i}"}) + "\n" for i in range(2)))
    models = "".join(f'[[models]]\nname = "m{i}"\nmodel = "scripted:m{i}"\nmax_tokens = 4\n\n' for i in range(3))
    path = tmp_path / "plan.toml"
    path.write_text(
        f'name = "mem"\nprompts = ["helpful:k=0,1"]\nshift = true\n\n{models}'
        f'[[datasets]]\nname = "items"\ndataset = "json"\ndata_file = "{data}"\n'
    )
    opened, open_at_load = [], []

    def tracked(spec, options):
        open_at_load.append((spec, sorted(b.name for b in opened if not b.closed)))
        backend = load_backend(spec, options)
        original = backend.close

        def close():
            backend.closed = True
            original()

        backend.closed, backend.close = False, close
        opened.append(backend)
        return backend

    Experiment(read_plan(path), tmp_path / "out").run(load_backend=tracked)
    # each model: its assistant, then a second instance for the shift; the previous model's both closed
    assert [spec for spec, _ in open_at_load] == [
        "scripted:m0",
        "scripted:m0",
        "scripted:m1",
        "scripted:m1",
        "scripted:m2",
        "scripted:m2",
    ]
    assert [len(still_open) for _, still_open in open_at_load] == [0, 1, 0, 1, 0, 1]
    assert all(b.closed for b in opened)

    def failing(spec, options):
        if spec == "scripted:m1":
            raise RuntimeError("no memory left")
        return tracked(spec, options)

    opened.clear()
    with pytest.raises(RuntimeError):
        Experiment(read_plan(path), tmp_path / "out2").run(load_backend=failing)
    assert opened and all(b.closed for b in opened)


def test_tagged_items_and_only_the_comparisons_the_plan_names(tmp_path, fixture_data):
    """A dataset cut by just-eval's tags; `compare` names the paired comparisons the report makes (by the
    plan's MODEL/VARIANT), and a name that is not a cell is refused before anything runs."""
    from untuned.experiment import Experiment, read_plan
    from untuned.experiment.report import compared_generators, write_report
    from untuned.interop import load_verdicts
    from untuned.report import build_report

    def write(compare: str, tags: str = '["stem"]') -> Path:
        path = tmp_path / "plan.toml"
        path.write_text(
            f'name = "tagged"\nprompts = ["helpful:k=0,1,3"]\n{compare}\n'
            '[[models]]\nname = "s"\nmodel = "scripted:tagged"\nmax_tokens = 8\n\n'
            f'[[datasets]]\nname = "je"\ndataset = "just-eval"\ndata_file = "{fixture_data / "just_eval_instruct.jsonl"}"\n'
            f"tags = {tags}\nlimit = 6\n\n"
            f'[judge]\nurl = "{url}"\nmodel = "scripted-judge"\nmodes = ["multi"]\n'
        )
        return path

    with scripted_server(judge) as (url, _):
        experiment = Experiment(read_plan(write('compare = [["s/helpful@k0", "s/helpful@k3"]]')), tmp_path / "out")
        items = experiment.items["je"]
        assert len(items) == 6 and all("stem" in [*i.meta["task_types"], *i.meta["topics"]] for i in items)
        files = experiment.run()
    judged = {f: load_verdicts(f) for f in files}
    pairs = compared_generators(experiment, judged)
    assert pairs == [("untuned/scripted-tagged/helpful@k0", "untuned/scripted-tagged/helpful@k3")]
    write_report(experiment, files)
    report = build_report([v for f in files for v in load_verdicts(f)], compare=True, pairs=pairs)
    assert [(c.a, c.b) for c in report.comparisons] == pairs
    every = build_report([v for f in files for v in load_verdicts(f)], compare=True)
    assert len(every.comparisons) == 3  # without `compare`: every two of the three variants
    with pytest.raises(UntunedError, match=r"compare names 's/helpful@k5': no such MODEL/VARIANT; the plan has s/helpful@k0"):
        read_plan(write('compare = [["s/helpful@k0", "s/helpful@k5"]]'))
    with pytest.raises(UntunedError, match="dataset je: no item has any of the tags nosuchtag"):
        Experiment(read_plan(write("", tags='["nosuchtag"]')), tmp_path / "none")


def test_experiment_and_generate_answer_mt_bench_alike(tmp_path):
    """One pipeline: an experiment's MT-bench cell gets FastChat's per-category temperatures, as `untuned
    generate mt-bench` does (the scripted model writes the temperature it was asked for), and the two runs'
    answers are identical; a temperature set in the plan holds for every question, as --temperature does."""
    from untuned.experiment import Experiment, read_plan
    from untuned.generation import GenerationFile

    questions = tmp_path / "question.jsonl"
    rows = [(81, "writing"), (111, "math"), (141, "stem")]
    questions.write_text(
        "".join(json.dumps({"question_id": q, "category": c, "turns": ["SCRIPT: @temperature @end"] * 2}) + "\n" for q, c in rows)
    )
    generated = tmp_path / "generated.jsonl"
    result = CliRunner().invoke(
        app, ["generate", "mt-bench", "--data-file", str(questions), "--model", "scripted:t", "--out", str(generated)]
    )
    assert result.exit_code == 0, result.output
    for extra, expected in (("", {"81": "t=0.7", "111": "t=0", "141": "t=0.1"}), ("temperature = 0.3\n", None)):
        path = tmp_path / f"plan{bool(extra)}.toml"
        path.write_text(
            f'name = "mt"\nprompts = ["helpful"]\n[[models]]\nname = "s"\nmodel = "scripted:t"\n{extra}'
            f'[[datasets]]\nname = "mt"\ndataset = "mt-bench"\ndata_file = "{questions}"\n'
        )
        out = tmp_path / f"exp{bool(extra)}"
        Experiment(read_plan(path), out).run()
        records = {r.id: r for r in GenerationFile(out / "cells" / "s__helpful__mt" / "answers.jsonl").read()}
        if expected is None:
            assert {o.strip() for r in records.values() for o in r.outputs} == {"t=0.3"}
            continue
        assert {i: r.outputs[0].strip() for i, r in records.items()} == expected
        mine = {r.id: r.outputs for r in GenerationFile(generated).read()}
        assert {i: r.outputs for i, r in records.items()} == mine
        assert next(iter(records.values())).temperature_by_category == GenerationFile(generated).read()[0].temperature_by_category


def test_paths_in_a_plan_are_read_from_the_plan_s_folder(tmp_path, monkeypatch):
    """Run from another directory: the data file and the prompt set file named relative to the plan are found."""
    from untuned.experiment import read_plan
    from untuned.experiment.plan import cells, dataset_items

    folder = tmp_path / "study"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "items.jsonl").write_text(json.dumps({"id": "1", "instruction": "Hi"}) + "\n")
    (folder / "mine.urial").write_text((Path(__file__).parents[1] / "src/untuned/prompts/one-shot.urial").read_text())
    (folder / "plan.toml").write_text(
        'name = "rel"\nprompts = ["mine.urial", "mine.urial:k=0"]\n\n[[models]]\nname = "m"\nmodel = "scripted:m"\n\n'
        '[[datasets]]\nname = "items"\ndataset = "json"\ndata_file = "data/items.jsonl"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    plan = read_plan(Path("..") / "study" / "plan.toml")
    assert plan.datasets[0].data_file == str(folder.resolve() / "data" / "items.jsonl")
    assert [item.id for item in dataset_items(plan.datasets[0])] == ["1"]
    assert len(cells(plan)) == 2
    (folder / "plan.toml").write_text(
        'name = "rel"\nprompts = ["helpful"]\n\n[[models]]\nname = "m"\nmax_tokens = "48"\n\n'
        '[[datasets]]\nname = "items"\ndataset = "json"\ndata_file = "data/items.jsonl"\n'
    )
    with pytest.raises(UntunedError, match=r"plan.toml line 6: models.0.sampling.max_tokens: Input should be a valid integer"):
        read_plan(folder / "plan.toml")


@pytest.mark.slow
def test_a_grid_measured_by_likelihood_with_no_judge(tmp_path):
    """`likelihood.answers`: each cell scores target answers (by item id) under its model and prompt set; the
    report gives NLL per token with intervals and says whether each step in K is beyond noise."""
    questions = [
        "What is snow?",
        "Why do cats purr?",
        "What is a comet?",
        "How do birds fly?",
        "What is rust?",
        "Why is the sea salty?",
    ]
    answers = [
        "snow is frozen water falling in flakes ~ each flake has six sides",
        "cats purr when calm ~ the sound comes from their throat",
        "a comet is ice and dust ~ its tail glows near the sun",
        "birds fly with wings and light bones ~ air pushes them up",
        "rust is iron meeting oxygen and water ~ it turns red and flaky",
        "rivers carry salt from rocks to the sea ~ the water leaves but the salt stays",
    ]
    data, targets = tmp_path / "items.jsonl", tmp_path / "targets.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "instruction": q}) + "\n" for i, q in enumerate(questions)))
    targets.write_text(
        "".join(
            json.dumps({"id": str(i), "instruction": q, "output": f"Ahoy, tide-friend! ~ {a} ~ eight arms, one answer"}) + "\n"
            for i, (q, a) in enumerate(zip(questions, answers))
        )
    )
    path = tmp_path / "plan.toml"
    path.write_text(f"""name = "likely"
prompts = ["{FIXTURES / "octopus.urial"}:k=0,4"]

[[models]]
name = "gemma"
model = "default"
max_tokens = 4
concurrency = 1

[[datasets]]
name = "items"
dataset = "json"
data_file = "{data}"

[likelihood]
answers = "{targets}"
""")
    result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = [
        json.loads(line)
        for line in (tmp_path / "out" / "cells" / "gemma__octopus@k4__items" / "likelihood.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in rows] == [str(i) for i in range(6)] and all(r["tokens"] > 5 for r in rows)
    report = (tmp_path / "out" / "report" / "likelihood.md").read_text()
    assert "gemma/octopus/items: K = 0 → 4: lower, beyond noise" in report
    assert (tmp_path / "out" / "report" / "likelihood.png").stat().st_size > 1000
    assert "likelihood: " in plain(result.output)


def test_a_setting_is_declared_once_and_a_plan_takes_every_one():
    """A plan's model has no load or sampling field of its own: it nests LoadOptions and Sampling, so a field
    added to either is a plan key at once, and a copy declared beside them fails here."""
    from untuned.backends import LoadOptions, Sampling
    from untuned.experiment.plan import ModelPlan

    shared = set(LoadOptions.model_fields) | set(Sampling.model_fields)
    own = set(ModelPlan.model_fields) - {"load", "sampling", "concurrency"}  # concurrency: the run's, as generate's
    assert own == {"name", "model", "chat_template"} and not own & shared
    assert ModelPlan.model_fields["load"].annotation is LoadOptions and ModelPlan.model_fields["sampling"].annotation is Sampling
    given = {"n_ctx": 1024, "kv_type": "q8_0", "draft": "prompt-lookup", "concurrency": 3, "max_tokens": 7, "top_k": 5}
    plan = ModelPlan.model_validate({"name": "m", **given}).run_plan()
    assert (plan.loading.n_ctx, plan.loading.kv_type, plan.loading.draft, plan.loading.parallel) == (
        1024,
        "q8_0",
        "prompt-lookup",
        3,
    )
    assert (plan.sampling.max_tokens, plan.sampling.top_k, plan.temperature_given) == (7, 5, False)
    assert ModelPlan(name="m").run_plan().sampling.max_tokens == Sampling().max_tokens  # one default: generate's
    with pytest.raises(ValueError, match="max_tokens is given twice"):
        ModelPlan.model_validate({"name": "m", "max_tokens": 7, "sampling": {"max_tokens": 8}})


def test_a_cell_through_experiment_and_through_generate_gives_the_same_records(tmp_path):
    """The same model, prompt set, items and settings: experiment's cell and generate write byte-identical
    records (but for the seconds each took)."""
    from untuned.experiment import Experiment, read_plan

    data = tmp_path / "items.jsonl"
    data.write_text(
        "".join(json.dumps({"id": str(i), "instruction": f"SCRIPT: answer {i} @repeat=6:x"}) + "\n" for i in range(4))
    )
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'name = "same"\nprompts = ["safe"]\n[[models]]\nname = "s"\nmodel = "scripted:same"\nmax_tokens = 5\n'
        f'top_k = 3\nconcurrency = 2\n[[datasets]]\nname = "items"\ndataset = "json"\ndata_file = "{data}"\n'
    )
    experiment = Experiment(read_plan(plan), tmp_path / "exp")
    experiment.run()
    ((cell, _),) = experiment.cells
    flags = ["--model", "scripted:same", "--prompt", "safe", "--max-tokens", "5", "--top-k", "3", "--concurrency", "2"]
    out = tmp_path / "generated.jsonl"
    result = CliRunner().invoke(app, ["generate", "json", "--data-file", str(data), *flags, "--out", str(out)])
    assert result.exit_code == 0, result.output

    def without_time(path):
        return sorted(re.sub(r'"seconds":[0-9.e-]+', '"seconds":0', line) for line in path.read_text().splitlines())

    made = without_time(experiment.folder(cell) / "answers.jsonl")
    assert len(made) == 4 and '"max_tokens":5' in made[0] and '"top_k":3' in made[0]
    assert made == without_time(out)
