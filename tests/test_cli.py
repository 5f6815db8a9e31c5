"""The command line: end to end on the bundled model (marked slow), its plumbing on the scripted
model (tests/scripted), and every documented error message."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from helpers import plain
from typer.testing import CliRunner

from untuned.cli import app

runner = CliRunner()
SCRIPTED = ("--model", "scripted:cli")


def untuned(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "untuned.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_ask_answers_paris():
    result = untuned("ask", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("[stop · ") and "first token" in summary and "tok/s]" in summary


def test_ask_reads_stdin_shows_prompt_and_times_honestly():
    args = ["ask", "-", "--show-prompt", "--max-tokens", "8", "--prompt", "one-shot", *SCRIPTED]
    result = runner.invoke(app, args, input="SCRIPT: one @delay=0.2 two three")
    assert result.exit_code == 0, result.output
    assert "# Query:\n````\nSCRIPT: one @delay=0.2 two three\n````\n\n# Answer:\n````" in result.output
    assert "one two three" in result.output
    # two tokens 0.2 s apart after the first: decoding ~5 tok/s, not diluted by the time to the first token
    speed = float(re.search(r"decoding ([\d.]+) tok/s", result.output).group(1))
    # the two 0.2 s delays bound it from above on any machine (a slower one only lowers it)
    assert 0 < speed <= 5.05 and "[stop · 3 tokens · first token" in result.output


def test_chat_keeps_the_conversation_and_resets_it():
    script = "SCRIPT: Noted.\nSCRIPT: second\n/reset\nSCRIPT: third\n/exit\nnever asked\n"
    result = runner.invoke(app, ["chat", "--show-prompt", *SCRIPTED], input=script)
    assert result.exit_code == 0, result.output
    prompts = [p for p in result.output.split("# Instruction") if "SCRIPT: " in p]
    assert len(prompts) == 3 and "never asked" not in result.output and "conversation cleared" in result.output
    assert "# Answer:\n````\nNoted.\n````" in prompts[1]  # the second prompt holds the first answer
    assert "Noted." not in prompts[2]  # after /reset


@pytest.mark.slow
def test_chat_with_piped_stdin_keeps_context_and_resets():
    script = "I have a dog called Biscuit.\nWhat is my dog called?\n/reset\nWhat is my dog called?\n/exit\nnever asked\n"
    result = untuned("chat", "--max-tokens", "32", stdin=script)
    assert result.returncode == 0, result.stderr
    answers = [a for a in result.stdout.split("\n\n") if a.strip()]
    assert len(answers) == 3, result.stdout
    assert "Biscuit" in answers[1]
    assert "Biscuit" not in answers[2]
    assert "conversation cleared" in result.stderr


def test_prompts_list_and_show():
    listing = runner.invoke(app, ["prompts", "list", *SCRIPTED])
    assert listing.exit_code == 0, listing.output
    for name in ("helpful", "safe", "one-shot", "zero-shot", "long"):
        assert name in listing.output
    shown = runner.invoke(app, ["prompts", "show", "safe"])
    assert shown.exit_code == 0 and "=== answer ===" in shown.output and "can't help" in shown.output
    rendered = runner.invoke(app, ["prompts", "show", "one-shot", "--rendered"])
    assert rendered.output.startswith("# Instruction\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/no/such/model.gguf"], "GGUF file not found: /no/such/model.gguf"),
        (["--model", "someorg/somemodel"], "write hf:someorg/somemodel"),
        (["--prompt", "helpfull"], "unknown prompt 'helpfull'. Bundled prompt sets: helpful, long"),
        (["--prompt", "missing.urial"], "prompt file 'missing.urial' does not exist"),
        (["--n-ctx", "128", *SCRIPTED], "more than the model's window of 128 tokens"),
        (["--temperature", "9"], "Invalid value for '--temperature' / '-t': Input should be less than or equal to 5"),
    ],
)
def test_error_messages(args, message):
    result = runner.invoke(app, ["ask", "Hello?", *args])
    assert result.exit_code == 2
    assert message in plain(result.output)


def test_corrupt_model_file(tmp_path):
    junk = tmp_path / "broken.gguf"
    junk.write_bytes(b"GGUF" + os.urandom(4096))
    result = runner.invoke(app, ["ask", "Hello?", "--model", str(junk)])
    assert result.exit_code == 2
    assert "could not load" in result.output and "truncated or corrupt" in result.output


def test_malformed_prompt_file_names_the_line(tmp_path):
    bad = tmp_path / "mine.urial"
    bad.write_text("name: mine\n=== system ===\nBe nice.\n=== query ===\nHi\n=== query ===\nAgain\n")
    result = runner.invoke(app, ["ask", "Hello?", "--prompt", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}, line 6: a query follows the query of line 4" in plain(result.output)


def test_hub_id_offline_says_how_to_pass_a_path():
    pytest.importorskip("transformers", reason="the hf: path needs the [hf] extra")
    result = untuned("ask", "Hello?", "--model", "hf:untuned-tests/no-such-model", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "could not fetch hf:untuned-tests/no-such-model" in result.stderr
    assert "pass --model DIR" in plain(result.stderr)
