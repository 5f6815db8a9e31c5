"""The pool of kept examples: a real SQLite file under two writing processes and a writer killed mid-transaction,
refusals that lose nothing, the CLI, and ``--prompt pool:NAME`` equal to the pool's own .urial export."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from untuned.cli import app
from untuned.conversation import Conversation
from untuned.pool import Pool, PoolError
from untuned.prompt import load_prompt

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("UNTUNED_DATA_DIR", str(tmp_path))
    return tmp_path


def test_keep_edit_reorder_remove(data_dir):
    pool = Pool()
    first = pool.keep("mine", "What is tea?", "A drink. Brewed from leaves.", model="gemma", prompt_set="helpful")
    second = pool.keep("mine", "Name a colour.", "Teal, shown as it was.", original="Teal, shown as it was.")
    assert [e.id for e in pool.examples("mine")] == [second.id, first.id]  # new ones first
    assert second.original is None  # kept as shown: no separate original
    edited = pool.edit(first.id, answer="A drink, brewed from leaves.")
    assert edited.answer == "A drink, brewed from leaves." and edited.original == "A drink. Brewed from leaves."
    pool.reorder("mine", [first.id, second.id])
    assert [e.id for e in pool.examples("mine")] == [first.id, second.id]
    with pytest.raises(PoolError, match="name each of its 2 examples once"):
        pool.reorder("mine", [first.id])
    assert pool.remove(second.id).query == "Name a colour."
    assert pool.pools() == [("mine", 1)]
    with pytest.raises(PoolError, match=f"no kept example has id {second.id}"):
        pool.get(second.id)


@pytest.mark.parametrize(
    ("pool_name", "query", "answer", "message"),
    [
        ("mine", "A query", "   ", "empty answer"),
        ("mine", "", "An answer", "empty query"),
        ("my pool", "A query", "An answer", "must be 1-128 letters"),
        ("mine", "A query", "=== answer ===\nsneaky", "cannot be written as a .urial file"),
    ],
)
def test_what_cannot_be_kept_is_refused_and_nothing_is_written(data_dir, pool_name, query, answer, message):
    pool = Pool()
    pool.keep("mine", "Kept before", "Still here.")
    with pytest.raises(PoolError, match=message):
        pool.keep(pool_name, query, answer)
    assert [(e.query, e.answer) for e in pool.examples("mine")] == [("Kept before", "Still here.")]


def test_a_duplicate_is_refused_naming_the_example_it_repeats(data_dir):
    pool = Pool()
    kept = pool.keep("mine", "Q?", "A.")
    with pytest.raises(PoolError, match=rf"holds this example already \(id {kept.id}\)"):
        pool.keep("mine", "Q?\n", "A.  ")  # the same texts as a .urial file reads them
    assert len(pool.examples("mine")) == 1
    pool.keep("other", "Q?", "A.")  # another pool may hold it


def test_a_newer_or_damaged_database_is_refused_and_left_as_it_is(data_dir):
    newer = data_dir / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    before = newer.read_bytes()
    with pytest.raises(PoolError, match="made by a newer untuned .schema 99"):
        Pool(newer)
    assert newer.read_bytes() == before
    damaged = data_dir / "damaged.sqlite"
    damaged.write_bytes(b"not a database, " * 512)
    with pytest.raises(PoolError, match="cannot be read .* left as it is"):
        Pool(damaged)
    assert damaged.read_bytes() == b"not a database, " * 512


WRITER = textwrap.dedent(
    """
    import sys
    from untuned.pool import Pool, PoolError
    pool, tag, shared = Pool(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for i in range(40):
        pool.keep("mine", f"{tag} question {i}", f"answer {i}")
    for i in range(shared):
        try:
            pool.keep("mine", f"shared question {i}", "the same answer")
        except PoolError:
            pass
    """
)


def test_two_writing_processes_lose_nothing_and_duplicate_nothing(tmp_path):
    path = tmp_path / "pool.sqlite"
    Pool(path).close()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, "20"]) for tag in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    queries = [e.query for e in Pool(path).examples("mine")]
    assert len(queries) == len(set(queries)) == 100  # 40 + 40 own, 20 shared kept once


KILLED = textwrap.dedent(
    """
    import sys, time
    from untuned.pool import Pool
    pool = Pool(sys.argv[1])
    pool.keep("mine", "committed", "before the kill")
    pool._db.execute("BEGIN IMMEDIATE")
    pool._db.execute("INSERT INTO examples (pool, query, answer, created, position) VALUES ('mine', 'half', 'done', 0, 0)")
    print("inside", flush=True)
    time.sleep(60)
    """
)


def test_a_writer_killed_inside_its_transaction_leaves_the_last_committed_state(tmp_path):
    path = tmp_path / "pool.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "inside"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    pool = Pool(path)
    assert [e.query for e in pool.examples("mine")] == ["committed"]
    pool.keep("mine", "after", "the lock is free again")  # its lock went with it
    assert len(pool.examples("mine")) == 2


def test_a_pool_served_as_a_prompt_set_equals_its_urial_export(data_dir, tmp_path):
    pool = Pool()
    pool.keep("taste", "How do I boil an egg?", "Gently.\n\n- Water at a simmer.\n- Nine minutes.")
    pool.keep("taste", "Say hi.", "Hi — briefly, always.")
    served = load_prompt("pool:taste")
    result = runner.invoke(app, ["pool", "export", "taste", str(tmp_path / "taste.urial")])
    assert result.exit_code == 0, result.output
    exported = load_prompt(tmp_path / "taste.urial")
    assert (served.system, served.examples) == (exported.system, exported.examples) and served.k == 2
    rendered = []
    for prompt_set in (served, exported):
        conversation = Conversation(prompt_set)
        conversation.add_user("And now?")
        rendered.append(conversation.render().text)
    assert rendered[0] == rendered[1] and "Hi — briefly, always." in rendered[0]
    with pytest.raises(PoolError, match="the pool 'nothing' holds no examples .pools: taste"):
        load_prompt("pool:nothing")


def test_cli_import_list_show_export_remove(data_dir, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}) + "\n"
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"instruction": "Two?", "output": "Two."}) + "\n" + json.dumps({"query": "Hi?", "answer": "Hello."}) + "\n"
    )
    assert runner.invoke(app, ["pool", "import", "p", str(chat)]).exit_code == 0
    again = runner.invoke(app, ["pool", "import", "p", str(rows)])
    assert again.exit_code == 0 and "kept 1 examples" in again.output and "1 it held already were skipped" in again.output
    assert [e.query for e in Pool().examples("p")] == ["Two?", "Hi?"]  # the file's order first
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"query": "Fine?", "answer": "Fine."}) + "\n" + json.dumps({"query": "Empty?", "answer": " "}) + "\n"
    )
    refused = runner.invoke(app, ["pool", "import", "p", str(bad)])
    assert refused.exit_code == 2 and "bad.jsonl" in refused.output and len(Pool().examples("p")) == 2  # nothing written
    listed = runner.invoke(app, ["pool", "list"])
    assert listed.exit_code == 0 and "p" in listed.output and "2" in listed.output
    first = Pool().examples("p")[0]
    shown = runner.invoke(app, ["pool", "show", str(first.id)])
    assert shown.exit_code == 0 and json.loads(shown.output)["answer"] == "Two."
    out = tmp_path / "p.jsonl"
    assert runner.invoke(app, ["pool", "export", "p", str(out)]).exit_code == 0
    assert [json.loads(line)["query"] for line in out.read_text().splitlines()] == ["Two?", "Hi?"]
    assert runner.invoke(app, ["pool", "export", "p", str(out)]).exit_code == 2  # exists: --force
    assert runner.invoke(app, ["pool", "remove", str(first.id)]).exit_code == 0 and len(Pool().examples("p")) == 1
    missing = runner.invoke(app, ["pool", "remove", "99999"])
    assert missing.exit_code == 2 and "no kept example has id 99999" in missing.output


def test_a_kept_example_survives_a_restart_and_answers_the_next_request(tmp_path):
    """`untuned serve --prompt pool:NAME`: an answer kept over HTTP is in the pool after the server restarts, and
    the next request's prompt holds it; one kept while the server runs is used by the request after it."""
    from helpers import http
    from helpers.servers import untuned_server

    env = {"UNTUNED_DATA_DIR": str(tmp_path)}
    Pool(tmp_path / "pool.sqlite").keep("served", "First?", "The first kept answer.")
    with untuned_server("--model", "scripted:page", "--prompt", "pool:served", env=env) as root:
        made = http.post(f"{root}/v1/untuned/pools/served", json={"query": "Second?", "answer": "Kept over HTTP."})
        assert made.status_code == 201
        again = http.post(f"{root}/v1/untuned/pools/served", json={"query": "Second?", "answer": "Kept over HTTP."})
        assert again.status_code == 409 and "holds this example already" in again.json()["error"]["message"]
        empty = http.post(f"{root}/v1/untuned/pools/served", json={"query": "Third?", "answer": " "})
        assert empty.status_code == 400 and "empty answer" in empty.json()["error"]["message"]
        elsewhere = http.delete(f"{root}/v1/untuned/pools/other/{made.json()['id']}")
        assert elsewhere.status_code == 400 and "is in the pool 'served', not 'other'" in elsewhere.json()["error"]["message"]
    with untuned_server("--model", "scripted:page", "--prompt", "pool:served", env=env) as root:
        assert [k["answer"] for k in http.get(f"{root}/v1/untuned/pools/served").json()] == [
            "Kept over HTTP.",
            "The first kept answer.",
        ]
        seen = http.post(f"{root}/v1/untuned/prompt", json={"messages": [{"role": "user", "content": "Next?"}]}).json()
        assert "Kept over HTTP." in seen["text"] and "The first kept answer." in seen["text"]
        http.post(f"{root}/v1/untuned/pools/served", json={"query": "Later?", "answer": "Kept while it runs."})
        seen = http.post(f"{root}/v1/untuned/prompt", json={"messages": [{"role": "user", "content": "Next?"}]}).json()
        assert "Kept while it runs." in seen["text"]
        reply = http.post(
            f"{root}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Next?"}], "max_tokens": 8}
        )
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]


def test_a_pool_larger_than_the_window_is_served_with_the_examples_that_fit(data_dir, gemma, caplog):
    """As many examples as leave max_tokens and room for the question, the pool's first ones, and a warning that
    says how many were left out (nothing cut silently; another prompt set that does not fit is still refused)."""
    import dataclasses
    import logging

    from untuned import Sampling
    from untuned.assistant import QUESTION_ROOM, Assistant
    from untuned.conversation import render_prefix

    pool = Pool()
    for i in range(40):
        pool.keep(
            "big", f"Question number {i}: tell me about topic {i}.", f"Answer {i}. " + "A long line of careful prose. " * 25
        )
    served = load_prompt("pool:big")
    with caplog.at_level(logging.WARNING, logger="untuned.assistant"):
        assistant = Assistant(gemma, served, Sampling(max_tokens=64))
    fitted = assistant.prompt
    size = lambda prompt_set: len(gemma.tokenize(render_prefix(prompt_set), add_special=True))  # noqa: E731
    budget = gemma.context_length - 64 - QUESTION_ROOM
    assert 0 < fitted.k < served.k and fitted.examples == served.examples[: fitted.k]
    assert size(fitted) <= budget < size(dataclasses.replace(served, examples=served.examples[: fitted.k + 1]))
    assert f"{fitted.k} of its 40 examples fit" in caplog.text and f"{40 - fitted.k} left out" in caplog.text


def test_a_database_held_by_another_writer_is_a_clear_error_and_nothing_is_written(tmp_path):
    path = tmp_path / "pool.sqlite"
    pool = Pool(path)
    pool._db.execute("PRAGMA busy_timeout = 200")  # not 30 s: the test waits for the refusal
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(PoolError, match="busy .* another process holds it; nothing was written"):
            pool.keep("mine", "Q?", "A.")
    finally:
        holder.execute("ROLLBACK")
    assert pool.examples("mine") == []
    pool.keep("mine", "Q?", "A.")  # free again
