"""GGUF specs on the Hugging Face Hub, resolved against a local folder laid out like the Hub's cache
(HF_HUB_OFFLINE=1: no network in tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import plain

from untuned import Assistant, LoadOptions, Sampling, hub, load_backend
from untuned.backends import ModelSpec
from untuned.errors import ModelNotFoundError
from untuned.prompt import load_prompt

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cached_repo(cache: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """A repository in the Hub cache's layout: refs/main names a snapshot holding ``files``."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    for name, content in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            target.symlink_to(content)
        else:
            target.write_bytes(content)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, gemma_path):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached_repo(
        cache,
        "someone/gemma-base-GGUF",
        {"gemma-base-Q4_K_M.gguf": gemma_path, "gemma-base-Q8_0.gguf": b"GGUF", "README.md": b"# GGUF files"},
    )
    parts = {f"Q4_K_M/big-Q4_K_M-0000{i}-of-00002.gguf": b"GGUF" for i in (1, 2)}
    cached_repo(cache, "someone/big-GGUF", {**parts, "big-IQ2_XS.gguf": b"GGUF"})
    cached_repo(cache, "someone/plain-model", {"config.json": b"{}", "model.safetensors": b""})
    return cache


def test_specs_name_a_quantisation_a_file_or_a_repository():
    assert hub.parse("org/repo:q4_k_m") == hub.HubGguf("org/repo", quant="q4_k_m")
    assert hub.parse("org/repo/sub/dir/model-Q8_0.gguf") == hub.HubGguf("org/repo", filename="sub/dir/model-Q8_0.gguf")
    assert hub.parse("org/repo") is None
    with pytest.raises(ModelNotFoundError, match="write hf:org/repo:QUANT"):
        hub.parse("org:Q4_K_M")
    assert ModelSpec.parse("hf:org/repo:Q4_K_M").kind == "hub-gguf"
    assert ModelSpec.parse("hf:org/repo:Q4_K_M").default_backend == "llama.cpp"
    assert ModelSpec.parse("hf:org/repo").default_backend == "transformers"
    assert [hub.quant_of(f) for f in ("a-Q4_K_M.gguf", "b.Q8_0.gguf", "c-IQ2_XS-00001-of-00003.gguf", "d-f16.gguf")] == [
        "Q4_K_M",
        "Q8_0",
        "IQ2_XS",
        "F16",
    ]


def test_choosing_files_split_parts_and_clear_refusals():
    files = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "x/big-Q5_K_M-00002-of-00002.gguf", "x/big-Q5_K_M-00001-of-00002.gguf"]
    assert hub.choose(files, hub.HubGguf("o/r")) == ["m-Q4_K_M.gguf"]  # Q4_K_M by default
    assert hub.choose(files, hub.HubGguf("o/r", quant="q5_k_m")) == [
        "x/big-Q5_K_M-00001-of-00002.gguf",
        "x/big-Q5_K_M-00002-of-00002.gguf",
    ]
    assert hub.choose(files, hub.HubGguf("o/r", filename="m-Q8_0.gguf")) == ["m-Q8_0.gguf"]
    with pytest.raises(ModelNotFoundError, match="no Q2_K GGUF in o/r; quantisations there: Q4_K_M, Q5_K_M, Q8_0"):
        hub.choose(files, hub.HubGguf("o/r", quant="Q2_K"))
    with pytest.raises(ModelNotFoundError, match="several Q4_K_M files"):
        hub.choose(["a-Q4_K_M.gguf", "b-Q4_K_M.gguf"], hub.HubGguf("o/r"))
    with pytest.raises(ModelNotFoundError, match="missing.gguf is not in o/r"):
        hub.choose(files, hub.HubGguf("o/r", filename="missing.gguf"))


def test_cached_files_load_offline(hub_cache):
    backend = load_backend("hf:someone/gemma-base-GGUF:Q4_K_M", LoadOptions(n_ctx=2048))
    try:
        assert backend.name == "hf:someone/gemma-base-GGUF:Q4_K_M"
        answer = Assistant(backend, load_prompt("helpful"), Sampling(max_tokens=16)).ask("What is the capital of France?")
        assert "Paris" in answer.text
    finally:
        backend.close()
    split = hub.fetch(hub.HubGguf("someone/big-GGUF", quant="Q4_K_M"))
    assert split.name == "big-Q4_K_M-00001-of-00002.gguf" and split.with_name("big-Q4_K_M-00002-of-00002.gguf").exists()


def test_a_repository_alone_is_gguf_or_transformers_by_its_files(hub_cache):
    assert hub.has_gguf("someone/gemma-base-GGUF") and not hub.has_gguf("someone/plain-model")
    backend = load_backend("hf:someone/gemma-base-GGUF", LoadOptions(n_ctx=512))  # its Q4_K_M file, by llama.cpp
    assert backend.name == "hf:someone/gemma-base-GGUF:Q4_K_M"
    backend.close()


def test_a_missing_split_part_or_file_is_a_clear_error(hub_cache):
    (hub_cache / "models--someone--big-GGUF" / "snapshots" / COMMIT / "Q4_K_M" / "big-Q4_K_M-00002-of-00002.gguf").unlink()
    with pytest.raises(ModelNotFoundError, match="is not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        hub.fetch(hub.HubGguf("someone/big-GGUF", filename="Q4_K_M/big-Q4_K_M-00001-of-00002.gguf"))


def test_no_network_and_no_cache_says_what_to_do_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}
    result = subprocess.run(
        [sys.executable, "-m", "untuned", "ask", "Hi", "--model", "hf:someone/absent-GGUF:Q4_K_M"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "huggingface-cli download someone/absent-GGUF --include '*Q4_K_M*'" in plain(lines[0])


def test_a_download_the_disk_cannot_hold_is_refused_before_it_starts(tmp_path):
    """The sizes are the Hub's listing (given here: no network); a part left half-downloaded counts."""
    with pytest.raises(ModelNotFoundError, match=r"needs 1000000000.00 GB and .* GB free"):
        hub.check_space("org/big", ["big.gguf"], tmp_path, sizes={"big.gguf": 10**18})
    blobs = tmp_path / "models--org--small" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc.incomplete").write_bytes(b"x" * 1000)
    hub.check_space("org/small", ["small.gguf"], tmp_path, sizes={"small.gguf": 1500})  # 500 bytes still to come


def test_the_plan_reads_a_cached_hub_file_offline(hub_cache):
    from untuned.placement import model_facts

    facts = model_facts("hf:someone/gemma-base-GGUF:Q4_K_M")
    assert facts.architecture == "gemma3" and facts.n_layer == 18
