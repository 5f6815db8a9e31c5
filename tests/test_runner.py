"""The resumable-run engine that generate, shift and judge share: crash safety written once.

The work here waits for files the test creates, so the test decides when each item finishes
and where a run is killed; nothing depends on how fast the machine is.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from untuned.errors import DataFileError, RunSettingsMismatch, UntunedError
from untuned.jsonl import JsonlFile
from untuned.runner import ResumableRun


class Item(BaseModel):
    id: str


class Settings(BaseModel):
    model: str
    temperature: float


class Record(BaseModel):
    id: str
    value: str
    model: str = "m"
    temperature: float = 0.0
    ok: bool = True

    def settings(self) -> Settings:
        return Settings(model=self.model, temperature=self.temperature)


WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_runner import Item, Record, Settings
    from untuned.jsonl import JsonlFile
    from untuned.runner import ResumableRun

    out, gates, count, concurrency = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    def work(batch):
        for item in batch:
            while not (gates / item.id).exists():
                time.sleep(0.01)
        return [Record(id=item.id, value=f"v{{item.id}}") for item in batch]

    run = ResumableRun(JsonlFile(out, Record), settings=Settings(model="m", temperature=0.0), settings_of=Record.settings)
    summary = run.run([Item(id=str(i)) for i in range(count)], work, concurrency=concurrency)
    print(summary.done, summary.skipped)
    """
)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_killed_run_resumes_losing_and_repeating_nothing(tmp_path, concurrency):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    out, gates = tmp_path / "run.jsonl", tmp_path / "gates"
    gates.mkdir()
    command = [sys.executable, str(worker), str(out), str(gates), "10", str(concurrency)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for ident in ("0", "1", "2"):
        (gates / ident).touch()
    _wait_for(lambda: _lines(out) == 3, "three records")
    process.send_signal(signal.SIGKILL)  # items 3.. are in progress, waiting for their gates
    process.wait()
    with out.open("a") as handle:
        handle.write(Record(id="1", value="v1 again").model_dump_json() + "\n")  # an id appended twice
        handle.write('{"id": "3", "val')  # and a torn write, as if killed in the middle of a line

    for ident in range(10):
        (gates / str(ident)).touch()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["7", "3"]  # 7 done now, 3 finished before the kill
    records = JsonlFile(out, Record).read()
    assert sorted(r.id for r in records) == sorted(["0", "1", "1", "2", *map(str, range(3, 10))])
    assert out.read_bytes().endswith(b"\n") and b'"val\n' not in out.read_bytes()  # the torn line is gone


def _store(tmp_path: Path) -> JsonlFile[Record]:
    return JsonlFile(tmp_path / "r.jsonl", Record)


def _values(batch: list[Item]) -> list[Record]:
    return [Record(id=item.id, value=f"v{item.id}") for item in batch]


def test_settings_must_match_unless_forced(tmp_path):
    store = _store(tmp_path)
    settings = Settings(model="m", temperature=0.0)
    ResumableRun(store, settings=settings, settings_of=Record.settings).run([Item(id="a")], _values)
    other = Settings(model="m", temperature=0.7)
    with pytest.raises(RunSettingsMismatch, match=r"1 records made with other settings \(temperature differ\)"):
        ResumableRun(store, settings=other, settings_of=Record.settings).run([Item(id="b")], _values)
    assert [r.id for r in store.read()] == ["a"]  # nothing written, nothing lost

    def hot(batch):
        return [Record(id=i.id, value="hot", temperature=0.7) for i in batch]

    summary = ResumableRun(store, settings=other, settings_of=Record.settings).run([Item(id="b")], hot, force=True)
    assert summary.done == 1 and [r.id for r in store.read()] == ["b"]
    assert len(list(tmp_path.glob("r.jsonl.*.old"))) == 1  # the old run is set aside, not lost


def test_settings_kept_beside_the_records_and_whole_folder_set_aside(tmp_path):
    folder = tmp_path / "out"

    def run(settings, force=False):
        store = JsonlFile(folder / "examples.jsonl", Record)
        return ResumableRun(store, settings=settings, settings_file=folder / "settings.json", aside=folder).run(
            [Item(id="a"), Item(id="b")], _values, force=force
        )

    assert run(Settings(model="m", temperature=0.0)).done == 2
    assert run(Settings(model="m", temperature=0.0)).skipped == 2
    with pytest.raises(RunSettingsMismatch, match="model differ"):
        run(Settings(model="other", temperature=0.0))
    assert run(Settings(model="other", temperature=0.0), force=True).done == 2
    assert json.loads((folder / "settings.json").read_text())["model"] == "other"
    assert len(list(tmp_path.glob("out.*.old"))) == 1


def test_unfinished_records_are_redone_and_latest_wins(tmp_path):
    store = _store(tmp_path)
    rounds = {"n": 0}

    def flaky(batch):  # b fails in the first round
        return [Record(id=i.id, value=f"round {rounds['n']}", ok=i.id != "b" or rounds["n"] > 1) for i in batch]

    run = ResumableRun(store, finished=lambda r: r.ok)
    rounds["n"] = 1
    first = run.run([Item(id="a"), Item(id="b")], flaky)
    assert (first.done, first.failed) == (1, 1)
    rounds["n"] = 2
    second = run.run([Item(id="a"), Item(id="b")], flaky)
    assert (second.done, second.failed, second.skipped) == (1, 0, 1)
    assert {r.id: r.value for r in second.records} == {"a": "round 1", "b": "round 2"}
    assert {r.id: r.ok for r in run.existing()} == {"a": True, "b": True}


def test_concurrent_items_each_recorded_once(tmp_path):
    store = _store(tmp_path)
    items = [Item(id=str(i)) for i in range(40)]

    def slow(batch):
        time.sleep(0.001 * (int(batch[0].id) % 5))
        return _values(batch)

    seen = []
    summary = ResumableRun(store).run(items, slow, concurrency=8, on_record=seen.append, tally=lambda r: {"chars": len(r.value)})
    assert summary.done == 40 and sorted(r.id for r in store.read()) == sorted(i.id for i in items)
    assert len(seen) == 40 and summary.counts["chars"] == sum(len(f"v{i}") for i in range(40))


def test_duplicate_input_ids_and_broken_files_are_refused(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(UntunedError, match="id 'x' appears more than once"):
        ResumableRun(store).run([Item(id="x"), Item(id="x")], _values)
    assert not store.path.exists()
    store.path.write_text('{"id": "a", "value": "v"}\n{"not": "a record"}\n')
    with pytest.raises(DataFileError, match="line 2"):
        ResumableRun(store).run([Item(id="a")], _values)


def test_a_failing_item_stops_the_run_keeping_what_was_done(tmp_path):
    store = _store(tmp_path)

    def fails_on_c(batch):
        if batch[0].id == "c":
            raise RuntimeError("model crashed")
        return _values(batch)

    with pytest.raises(RuntimeError, match="model crashed"):
        ResumableRun(store).run([Item(id=i) for i in "abcd"], fails_on_c)
    assert [r.id for r in store.read()] == ["a", "b"]
