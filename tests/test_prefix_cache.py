"""Evaluated prefixes on disk (issue 30): a restart loads the prefix instead of evaluating it and answers
exactly as when it was evaluated; a corrupt, truncated or stale file is detected, deleted and the prefix
evaluated again; the folder is bounded (least recently used first); `untuned cache list|clear`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import http
from helpers.servers import untuned_server
from typer.testing import CliRunner

from untuned import Assistant, Sampling
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.backends.llamacpp.prefix_store import MAGIC, evict, stored
from untuned.cli import app
from untuned.conversation import render_prefix
from untuned.prompt import load_prompt

QUESTION = "Name three primary colours."
GREEDY = Sampling(max_tokens=24, temperature=0)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("UNTUNED_CACHE_DIR", str(tmp_path))
    return tmp_path / "prefixes"


def answer(gemma_path: Path, **options) -> tuple[str, LlamaCppBackend]:
    backend = LlamaCppBackend(gemma_path, n_ctx=2048, prefix_cache=True, **options)
    try:
        text = Assistant(backend, load_prompt("helpful"), GREEDY).ask(QUESTION).text
    finally:
        backend.close()
    return text, backend


@pytest.mark.slow
def test_a_restart_loads_the_prefix_and_answers_the_same(gemma_path: Path, cache: Path) -> None:
    first, evaluated = answer(gemma_path)
    assert evaluated.engine.counters.prefix_loads == 0 and evaluated.engine.store.saves == 1
    [saved] = stored(cache)
    assert saved.tokens > 500 and saved.path.read_bytes().startswith(MAGIC)
    second, loaded = answer(gemma_path)
    assert loaded.engine.counters.prefix_loads == 1
    assert loaded.engine.counters.prompt_tokens < saved.tokens  # only the question was evaluated
    assert second == first
    # other options that change the numbers are other files, never this one
    third, other = answer(gemma_path, kv_type="q8_0")
    assert other.engine.counters.prefix_loads == 0 and len(stored(cache)) == 2


@pytest.mark.slow
def test_a_many_shot_prefix_past_the_sliding_window_loads_exactly(gemma_path: Path, cache: Path, fixture_data: Path) -> None:
    """~3,000 tokens of examples: gemma's sliding-window layers wrap round their ring of cells while the prefix
    is evaluated; the engine lays the cells out as a load does, so the loaded prefix sums attention in the
    same order and answers identically (without that, they differed)."""
    from untuned.prompt import build_prompt_set, read_examples

    examples = read_examples(fixture_data / "reference_outputs" / "gpt-4-0613.jsonl")
    answers, loads = [], []
    for cached in (False, True, True):
        backend = LlamaCppBackend(gemma_path, n_ctx=4096, prefix_cache=cached)
        try:
            prompt, k = None, 4
            while True:  # the fewest examples past 3,000 tokens
                prompt = build_prompt_set(examples, name="many", system="An assistant.", k=k)
                if len(backend.tokenize(render_prefix(prompt), add_special=True)) > 3000:
                    break
                k += 2
            answers.append(Assistant(backend, prompt, GREEDY).ask(QUESTION).text)
            loads.append(backend.engine.counters.prefix_loads)
        finally:
            backend.close()
    assert loads == [0, 0, 1]
    assert answers[0] == answers[1] == answers[2]


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped":
        data[-1000] ^= 0xFF  # one byte of the state
    elif how == "truncated":
        del data[len(data) // 2 :]
    elif how == "stale":  # a well-formed file, but saved for other load options
        at = len(MAGIC)
        length = int.from_bytes(data[at : at + 4], "little")
        header = json.loads(data[at + 4 : at + 4 + length])
        header["identity"]["kv_type"] = "q4_0"
        encoded = json.dumps(header, sort_keys=True).encode()
        data[at : at + 4 + length] = len(encoded).to_bytes(4, "little") + encoded
    elif how == "garbage":
        data[:] = os.urandom(4096)
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flipped", "truncated", "stale", "garbage"])
def test_a_damaged_file_is_recomputed_never_trusted(gemma_path: Path, cache: Path, how: str) -> None:
    first, _ = answer(gemma_path)
    [saved] = stored(cache)
    _damage(saved.path, how)
    second, backend = answer(gemma_path)
    assert backend.engine.store.rejected == 1 and backend.engine.counters.prefix_loads == 0
    assert second == first
    assert backend.engine.store.saves == 1  # evaluated again and saved afresh
    third, healed = answer(gemma_path)
    assert healed.engine.counters.prefix_loads == 1 and third == first


def test_the_folder_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    for index, name in enumerate(["old", "mid", "new"]):
        path = tmp_path / f"{name}.kv"
        path.write_bytes(MAGIC + b"\0" * 4 + b"x" * 1000)
        os.utime(path, (1000 + index, 1000 + index))
    gone = evict(tmp_path, limit_bytes=2100)
    assert [p.name for p in gone] == ["old.kv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid.kv", "new.kv"]


def test_cache_commands(tmp_path: Path) -> None:
    (tmp_path / "a.kv").write_bytes(MAGIC + b"\0" * 4 + b"x" * 100)
    runner = CliRunner()
    listed = runner.invoke(app, ["cache", "list", "--folder", str(tmp_path)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "1 prefixes" in listed.output and "a.kv" in listed.output
    cleared = runner.invoke(app, ["cache", "clear", "--folder", str(tmp_path)])
    assert cleared.exit_code == 0 and "deleted 1" in cleared.output and not list(tmp_path.glob("*.kv"))


def _first_answer(root: str) -> tuple[str, dict]:
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24, "temperature": 0}
    reply = http.post(f"{root}/v1/chat/completions", json=body)
    reply.raise_for_status()
    return reply.json()["choices"][0]["message"]["content"], http.get(f"{root}/health").json()["engine"]


@pytest.mark.slow
def test_a_restarted_server_answers_its_first_request_from_the_disk_cache(tmp_path: Path) -> None:
    """`untuned serve` with a many-shot prefix (the `long` set, ~2,000 tokens), stopped and started again."""
    env = {"UNTUNED_CACHE_DIR": str(tmp_path)}
    with untuned_server("--prompt", "long", env=env) as root:
        evaluated, engine = _first_answer(root)
    assert engine["prefix_loads"] == 0 and len(stored(tmp_path / "prefixes")) == 1
    with untuned_server("--prompt", "long", env=env) as root:
        loaded, engine = _first_answer(root)
        metrics = http.get(f"{root}/metrics").text
    assert engine["prefix_loads"] == 1 and "untuned_engine_prefix_disk_loads_total 1" in metrics
    assert loaded == evaluated
    with untuned_server("--prompt", "long", "--no-prefix-cache", env=env) as root:
        _, engine = _first_answer(root)
    assert engine["prefix_loads"] == 0
