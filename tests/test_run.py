"""untuned generate / merge / export / import: plumbing on the scripted model, end to end on the real one (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import plain
from helpers.servers import llama_cpp_server
from typer.testing import CliRunner

from untuned.cli import app
from untuned.generation import GenerationFile

runner = CliRunner()
SCRIPTED = ("--model", "scripted:run")


def cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.slow
def test_just_eval_and_mt_bench_with_gemma(fixture_data, tmp_path):
    out = tmp_path / "je.jsonl"
    result = cli(*just_eval_args(fixture_data, out, "--limit", "5", "--max-tokens", "24"))
    assert result.exit_code == 0, result.output
    records = GenerationFile(out).read()
    assert [r.id for r in records] == ["0", "1", "2", "3", "4"]
    first = records[0]
    assert first.instruction.startswith("What are the names of some famous actors")
    assert first.output and first.prompt_name == "helpful" and len(first.prompt_hash) == 64
    assert first.meta["task_types"] == ["info-seek"] and first.sampling["max_tokens"] == 24
    # each record's finish reason agrees with its token count: "length" exactly at the limit
    assert all(
        0 < r.completion_tokens[0] <= 24 and (r.finish_reasons[0] == "length") == (r.completion_tokens[0] == 24) for r in records
    )

    mt = tmp_path / "mt.jsonl"
    questions = str(fixture_data / "mt_bench_questions.jsonl")
    # greedy: FastChat's per-category temperatures (tested on the scripted model) would sample writing at 0.7,
    # and a sampled first turn may be empty, an answer this test cannot tell from a plumbing fault
    options = f"--limit 2 --out {mt} --max-tokens 24 --temperature 0".split()
    result = cli("generate", "mt-bench", "--data-file", questions, *options)
    assert result.exit_code == 0, result.output
    for record in GenerationFile(mt).read():
        assert len(record.turns) == 2 and len(record.outputs) == 2 and all(record.outputs)
        assert record.prompt_tokens[1] > record.prompt_tokens[0]  # turn 2 saw turn 1 and its answer


def just_eval_args(fixture_data: Path, out: Path | str, *options: str) -> list[str]:
    """`untuned generate just-eval` on the fixture's items into ``out``, with ``options``."""
    return ["generate", "just-eval", "--data-file", str(fixture_data / "just_eval_instruct.jsonl"), "--out", str(out), *options]


def test_generate_plumbing_on_the_scripted_model(fixture_data, tmp_path):
    """Fields, both MT-bench turns (the second sees the first), and concurrent items each once."""
    out = tmp_path / "je.jsonl"
    result = cli(*just_eval_args(fixture_data, out, "--limit", "12", "--concurrency", "4", *SCRIPTED))
    assert result.exit_code == 0, result.output
    assert "12 answered, 0 already in" in plain(result.output)
    records = {r.id: r for r in GenerationFile(out).read()}
    assert sorted(records, key=int) == [str(i) for i in range(12)]
    first = records["0"]
    assert first.output == f"You said: {first.instruction}" and first.model == "scripted:run"
    assert first.meta["task_types"] == ["info-seek"] and first.generator == "untuned/scripted-run/helpful"
    assert first.loading["batching"] == "uncontrolled"  # a backend that cannot hold answers batch-invariant says so
    refused = cli(*just_eval_args(fixture_data, tmp_path / "refused.jsonl", "--limit", "1", "--fast-batching", *SCRIPTED))
    assert refused.exit_code == 2 and "--fast-batching is a llama.cpp setting; scripted-run" in plain(refused.output)
    mt = tmp_path / "mt.jsonl"
    result = cli(
        "generate",
        "mt-bench",
        "--data-file",
        str(fixture_data / "mt_bench_questions.jsonl"),
        "--limit",
        "2",
        "--out",
        str(mt),
        *SCRIPTED,
    )
    assert result.exit_code == 0, result.output
    for record in GenerationFile(mt).read():
        assert len(record.turns) == 2 and [o.split(": ", 1)[1] for o in record.outputs] == [t.strip() for t in record.turns]
        assert record.prompt_tokens[1] > record.prompt_tokens[0] + len(record.outputs[0])  # turn 2 saw turn 1's answer


def test_resume_with_other_settings_is_refused(fixture_data, tmp_path):
    out = tmp_path / "run.jsonl"
    args = just_eval_args(fixture_data, out, "--limit", "1", "--max-tokens", "8", *SCRIPTED)
    assert cli(*args).exit_code == 0
    refused = cli(*args, "--prompt", "safe")
    assert refused.exit_code == 2
    assert "other settings (generator, prompt_name, prompt_hash differ)" in plain(refused.output)
    assert len(GenerationFile(out).read()) == 1
    forced = cli(*args, "--prompt", "safe", "--force")
    assert forced.exit_code == 0, forced.output
    assert [r.prompt_name for r in GenerationFile(out).read()] == ["safe"]
    assert len(list(tmp_path.glob("run.jsonl.*.old"))) == 1  # the old run is set aside, not lost


def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": 1, "prompt": "hello"}\n{"id": 2, "prompt": \n')
    out = tmp_path / "out.jsonl"
    result = cli("generate", "json", "--data-file", str(data), "--field", "prompt", "--out", str(out))
    assert result.exit_code == 2
    assert f"{data}, line 2: invalid JSON" in plain(result.output)
    assert not out.exists()
    missing = cli("generate", "json", "--data-file", str(data), "--out", str(out))
    assert "line 1: field 'instruction' is missing" in plain(missing.output)
    unknown = cli("generate", "alpacaeval", "--out", str(out))
    assert unknown.exit_code == 2
    assert "unknown dataset 'alpacaeval'; known: alpaca-eval, json, just-eval, mt-bench" in plain(unknown.output)


def test_shards_merge_and_export_in_just_eval_format(fixture_data, tmp_path):
    shards = []
    for index in range(2):
        shard = tmp_path / f"shard{index}.jsonl"
        result = cli(
            *just_eval_args(fixture_data, shard, "--ids", "10,11,12", "--shard", f"{index}/2", "--max-tokens", "8", *SCRIPTED)
        )
        assert result.exit_code == 0, result.output
        shards.append(str(shard))
    merged = tmp_path / "merged.jsonl"
    assert cli("merge", str(merged), *shards).exit_code == 0
    assert sorted(r.id for r in GenerationFile(merged).read()) == ["10", "11", "12"]

    exported = tmp_path / "just_eval_input.json"
    assert cli("export", str(merged), "--out", str(exported)).exit_code == 0
    rows = json.loads(exported.read_text())  # just-eval reads a JSON list of id/instruction/output/generator
    assert isinstance(rows, list) and len(rows) == 3
    for row in rows:
        assert isinstance(row["id"], int) and isinstance(row["instruction"], str) and isinstance(row["output"], str)
        assert row["generator"] == "untuned/scripted-run/helpful"
    alpaca = tmp_path / "alpaca.json"
    assert cli("export", str(merged), "--out", str(alpaca), "--format", "alpaca-eval").exit_code == 0
    assert set(json.loads(alpaca.read_text())[0]) == {"instruction", "output", "generator", "dataset"}


def test_export_round_trips_just_eval_fields(fixture_data, tmp_path):
    """Exported just-eval rows read back with plain json equal the published queries field by field:
    integer ids, tag lists as JSON lists (also from a copy that holds them as list texts, as the Hub's does)."""
    source = fixture_data / "just_eval_instruct.jsonl"
    published = {row["id"]: row for row in map(json.loads, source.read_text().splitlines())}
    hub_like = tmp_path / "hub_like.jsonl"  # the same rows with tag lists as Python list texts
    with hub_like.open("w") as handle:
        for ident in (0, 1, 2, 450, 799, 800, 999):
            row = dict(published[ident])
            for key in ("task_types", "topics"):
                if isinstance(row.get(key), list):
                    row[key] = repr(row[key])
            handle.write(json.dumps(row) + "\n")
    for data in (source, hub_like):
        run, exported = tmp_path / f"{data.stem}-run.jsonl", tmp_path / f"{data.stem}-export.json"
        result = cli(
            "generate",
            "just-eval",
            "--data-file",
            str(data),
            "--ids",
            "0,1,2,450,799,800,999",
            "--out",
            str(run),
            *SCRIPTED,
            "--max-tokens",
            "4",
        )
        assert result.exit_code == 0, result.output
        assert cli("export", str(run), "--out", str(exported)).exit_code == 0
        rows = json.loads(exported.read_text())
        assert [row["id"] for row in rows] == [0, 1, 2, 450, 799, 800, 999]
        for row in rows:
            original = published[row["id"]]
            for key, value in original.items():
                assert row[key] == value, (data.name, row["id"], key)
            assert set(row) == set(original) | {"output", "generator"}


def test_import_reference_answers(fixture_data, tmp_path):
    out = tmp_path / "gpt4.jsonl"
    source = fixture_data / "reference_outputs" / "gpt-4-0613.jsonl"
    result = cli("import", str(source), "--out", str(out), "--generator", "gpt-4-0613")
    assert result.exit_code == 0, result.output
    records = GenerationFile(out).read()
    first = json.loads(source.read_text().splitlines()[0])
    assert len(records) == len(source.read_text().splitlines()) == 133 and records[0].generator == "gpt-4-0613"
    assert (records[0].id, records[0].instruction, records[0].output) == ("0", first["instruction"], first["output"])
    again = cli("import", str(source), "--out", str(out))
    assert again.exit_code == 2 and "exists" in again.output


@pytest.mark.slow
def test_remote_concurrency_four(fixture_data, gemma_path, tmp_path):
    out = tmp_path / "remote.jsonl"
    with llama_cpp_server(gemma_path) as url:
        result = cli(
            *just_eval_args(fixture_data, out, "--limit", "6", "--model", url, "--concurrency", "4", "--max-tokens", "12")
        )
    assert result.exit_code == 0, result.output
    records = GenerationFile(out).read()
    assert sorted(r.id for r in records) == [str(i) for i in range(6)]
    assert all(r.output for r in records) and records[0].model == url


def test_selection_and_file_errors(fixture_data, tmp_path):
    data = tmp_path / "dup.jsonl"
    data.write_text('{"id": 1, "instruction": "a"}\n{"id": 1, "instruction": "b"}\n')
    out = str(tmp_path / "out.jsonl")
    cases = [
        (["generate", "json", "--data-file", str(data), "--out", out], "id '1' appears more than once"),
        (
            just_eval_args(fixture_data, out, "--shard", "4/4"),
            "--shard takes i/n with 0 <= i < n",
        ),
        (
            just_eval_args(fixture_data, out, "--ids", "1,5000"),
            "ids not in the dataset: 5000",
        ),
        (["generate", "mt-bench", "--out", out], "the mt-bench dataset needs --data-file"),
        (["export", str(data), "--out", out, "--format", "csv"], "'csv' is not one of 'just-eval', 'alpaca-eval'"),
        (["export", str(data), "--out", out], "line 1: not a generation record"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in plain(result.output), (args, result.output)
    assert not (tmp_path / "out.jsonl").exists()


def test_merge_refuses_mixed_settings(fixture_data, tmp_path):
    files = []
    for prompt in ("helpful", "safe"):
        path = tmp_path / f"{prompt}.jsonl"
        assert (
            cli(*just_eval_args(fixture_data, path, "--limit", "1", "--max-tokens", "4", "--prompt", prompt, *SCRIPTED)).exit_code
            == 0
        )
        files.append(str(path))
    result = cli("merge", str(tmp_path / "merged.jsonl"), *files)
    assert result.exit_code == 2 and "made with other settings" in plain(result.output)
    assert not (tmp_path / "merged.jsonl").exists()


def test_generate_in_the_models_own_chat_template(smollm_path, gemma_path, tmp_path):
    """The aligned side of a comparison from the same tool: an instruct model answers in its chat template."""
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"id": 1, "instruction": "What is the capital of France?"}) + "\n")
    out = tmp_path / "smol.jsonl"
    result = cli(
        "generate",
        "json",
        "--data-file",
        str(data),
        "--out",
        str(out),
        "--model",
        str(smollm_path),
        "--chat-template",
        "--max-tokens",
        "24",
    )
    assert result.exit_code == 0, result.output
    record = GenerationFile(out).read()[0]
    assert record.prompt_name == "chat-template" and len(record.prompt_hash) == 64 and record.output.strip()
    assert record.prompt_tokens[0] < 60 and record.generator.endswith("/chat-template")  # no URIAL prefix in the prompt
    refused = cli(
        "generate",
        "json",
        "--data-file",
        str(data),
        "--out",
        str(tmp_path / "g.jsonl"),
        "--model",
        str(gemma_path),
        "--chat-template",
    )
    assert refused.exit_code == 2 and "has no chat template" in plain(refused.output)


@pytest.mark.slow
def test_batch_runs_give_the_same_answers_at_any_concurrency(fixture_data, tmp_path):
    """Greedy answers of 16 just-eval items do not depend on --concurrency (1, 4, 8): a step decodes at
    most 7 requests together, the batch whose kernels give each its answer alone. --fast-batching
    lifts that, and the run's settings say so."""
    answers = {}
    for concurrency in (1, 4, 8):
        out = tmp_path / f"c{concurrency}.jsonl"
        result = cli(*just_eval_args(fixture_data, out, "--limit", "16", "--max-tokens", "48", "-c", str(concurrency)))
        assert result.exit_code == 0, result.output
        records = GenerationFile(out).read()
        assert {r.loading["batching"] for r in records} == {"invariant"}
        answers[concurrency] = {r.id: r.outputs[0] for r in records}
    assert answers[1] == answers[4] == answers[8] and len(answers[1]) == 16
    fast = tmp_path / "fast.jsonl"
    result = cli(*just_eval_args(fixture_data, fast, "--limit", "2", "--max-tokens", "4", "-c", "8", "--fast-batching"))
    assert result.exit_code == 0 and GenerationFile(fast).read()[0].loading["batching"] == "fast"


def test_a_run_in_a_kv_pool_records_the_pool_not_invariance(fixture_data, tmp_path):
    """Under --kv-budget the requests share cells wherever they are free: the run says "pooled" and the
    budget, never "invariant" (a greedy answer may differ with what shares the pool)."""
    out = tmp_path / "pooled.jsonl"
    result = cli(*just_eval_args(fixture_data, out, "--limit", "1", "--max-tokens", "4", "--kv-budget", "3000"))
    assert result.exit_code == 0, result.output
    loading = GenerationFile(out).read()[0].loading
    assert loading["batching"] == "pooled" and loading["kv_budget"] == 3000


def test_export_fastchat_writes_model_answers_that_read_back(fixture_data, tmp_path):
    """`export --format fastchat`: an MT-bench run as FastChat's model_answer/<model>.jsonl (what its
    gen_judgment.py grades), read back as FastChat's answers with --questions."""
    from untuned.interop.fastchat import read_mt_bench_answers

    run, answers, questions = tmp_path / "mt.jsonl", tmp_path / "my-model.jsonl", fixture_data / "mt_bench_questions.jsonl"
    result = cli(
        "generate", "mt-bench", "--data-file", str(questions), "--limit", "3", "--max-tokens", "6", "--out", str(run), *SCRIPTED
    )
    assert result.exit_code == 0, result.output
    result = cli("export", str(run), "--format", "fastchat", "--model-id", "my-model", "--out", str(answers))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [type(r["question_id"]) for r in rows] == [int] * 3 and {r["model_id"] for r in rows} == {"my-model"}
    assert all(set(r) == {"question_id", "answer_id", "model_id", "choices", "tstamp"} for r in rows)
    items = read_mt_bench_answers(answers, questions=questions)
    records = GenerationFile(run).read()
    assert [(i.id, i.turns, i.outputs) for i in items] == [(r.id, r.turns, r.outputs) for r in records]
    just_eval = tmp_path / "je.jsonl"
    assert cli(*just_eval_args(fixture_data, just_eval, "--limit", "1", "--max-tokens", "2", *SCRIPTED)).exit_code == 0
    refused = cli("export", str(just_eval), "--format", "fastchat", "--out", str(tmp_path / "x.jsonl"))
    assert refused.exit_code == 2 and "MT-bench runs" in plain(refused.output)
