"""The command line, end to end on the bundled model, and every documented error message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import plain
from typer.testing import CliRunner

from untuned.cli import app

runner = CliRunner()


def untuned(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "untuned.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_ask_answers_paris():
    result = untuned("ask", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "[stop ·" in result.stderr


def test_ask_reads_stdin_and_shows_prompt():
    result = runner.invoke(
        app, ["ask", "-", "--show-prompt", "--max-tokens", "8", "--prompt", "one-shot"], input="What is the capital of France?"
    )
    assert result.exit_code == 0, result.output
    assert "# Query:\n````\nWhat is the capital of France?\n````\n\n# Answer:\n````" in result.output


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
    listing = runner.invoke(app, ["prompts", "list"])
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
        (["--n-ctx", "128"], "tokens too many"),
        (["--temperature", "9"], "temperature: Input should be less than or equal to 5"),
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
