"""Every benchmark of bench/ runs end to end in its smoke mode (UNTUNED_BENCH_SMOKE=1: tiny sizes, the
suite's fixtures), so a change that breaks a benchmark fails here rather than on the day it is rerun.
Nothing measured here is a measurement; parts that need llama-server built from source say they are left out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "smoke.py")


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHES)
def test_benchmark_runs_in_smoke_mode(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "UNTUNED_BENCH_SMOKE": "1", "MPLBACKEND": "Agg", "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{name} printed nothing"


def test_every_benchmark_has_a_smoke_mode() -> None:
    """A benchmark that ignores the smoke switch would run at full size (hours) in the suite."""
    for name in BENCHES:
        text = (ROOT / "bench" / name).read_text()
        assert "from smoke import" in text or "import smoke" in text or "from serve_concurrency import" in text, name
