"""The benchmarks' smoke mode: with ``UNTUNED_BENCH_SMOKE=1`` every file of bench/ runs end to end at tiny sizes
on the suite's fixtures (tests/test_bench.py), so a change that breaks a benchmark fails CI; nothing it
prints is a measurement. Parts that need llama.cpp's C++ server built from source (minutes) are left out
and say so."""

from __future__ import annotations

import os
from pathlib import Path

SMOKE = os.environ.get("UNTUNED_BENCH_SMOKE") == "1"
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIXTURES = ROOT / "tests" / "fixtures" / "data"


def sized(full, smoke):
    """``full`` in a real run, ``smoke`` in the smoke run."""
    return smoke if SMOKE else full


def data(relative: str) -> Path:
    """A file of the benchmark data (../shared/data/); in the smoke run the suite's cut of it
    (tests/fixtures/data/). A real run without the data stops, naming the file."""
    if SMOKE:
        return FIXTURES / relative
    path = SHARED / relative
    if not path.exists():
        raise SystemExit(f"benchmark data not found: {path}")
    return path


def skipped(what: str) -> None:
    print(f"[smoke] left out: {what}")


if SMOKE:
    print("[smoke] tiny sizes on the suite's fixtures: nothing printed below is a measurement", flush=True)
