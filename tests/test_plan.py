"""`untuned plan` and the load options it stands on (issue 30): the GGUF header reader against the gguf
package's own reader and against a file served by byte ranges; the plans of the two desktop models from
tensor tables written out from their published shapes, against their published file sizes; the bundled
model's plan against what llama.cpp itself allocates; q8_0 KV with flash attention on the CPU; experts kept
in RAM reaching llama.cpp; the command line."""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import plain
from helpers.gguf_tables import (
    gemma3_27b_q4_k_m,
    llama2_70b_q4_k_m,
    llama3_70b_q4_k_m,
    mixtral_8x7b_q4_k_m,
    mixtral_per_expert_q4_k_m,
    qwen25_72b_q4_k_m,
    tinyllama_1b_q4_k_m,
)
from helpers.sparse_gguf import llama_cpp_accounting, write_sparse
from typer.testing import CliRunner

from untuned.backends.llamacpp import LlamaCppBackend
from untuned.backends.llamacpp.devices import CpuOverrides
from untuned.backends.llamacpp.native import NativeModel
from untuned.cli import app
from untuned.errors import ModelLoadError, UntunedError
from untuned.hub import range_reader
from untuned.placement import (
    GiB,
    Machine,
    Settings,
    facts_of,
    make_placement,
    model_facts,
    parse_size,
    read_file_header,
    read_header,
)
from untuned.placement.fit import VRAM_MARGIN, compute_bytes, place
from untuned.placement.header import buffered

DESKTOP = Machine(vram=24 * GiB, ram=64 * GiB)
MiB = 1 << 20


def test_sizes_are_read_as_written() -> None:
    assert parse_size("24GiB") == parse_size("24G") == parse_size("24 gib") == 24 * GiB
    assert parse_size("24GB") == 24 * 10**9
    assert parse_size("0") == 0
    assert parse_size("24") == parse_size("24.0") == 24 * GiB  # a bare number is GiB, as people say it
    assert parse_size("24000MB") == 24 * 10**9 and parse_size("512MiB") == 512 * 2**20
    with pytest.raises(UntunedError, match="not a size"):
        parse_size("lots")


def test_header_of_the_bundled_model_accounts_for_every_byte(gemma_path: Path) -> None:
    header = read_file_header(gemma_path)
    assert header.architecture == "gemma3" and header.value("block_count") == 18
    assert header.metadata["tokenizer.ggml.tokens"] == 262144  # a long array: its length only
    assert header.data_offset + sum(t.nbytes for t in header.tensors) == gemma_path.stat().st_size


@pytest.mark.slow
def test_header_reader_agrees_with_the_gguf_package(gemma_path: Path) -> None:
    """Differential: every tensor's name, shape, type and size, and every short metadata value, as gguf's
    own GGUFReader reads them."""
    import gguf

    theirs = gguf.GGUFReader(gemma_path)
    ours = read_file_header(gemma_path)
    assert [(t.name, t.shape, t.type, t.nbytes) for t in ours.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in theirs.tensors
    ]
    assert ours.data_offset == theirs.data_offset
    for key, field in theirs.fields.items():
        if key.startswith("GGUF.") or key not in ours.metadata or isinstance(ours.metadata[key], int) and len(field.data) > 64:
            continue
        value = field.contents()
        assert ours.metadata[key] == pytest.approx(value) if isinstance(value, float) else ours.metadata[key] == value, key


def test_a_truncated_header_is_refused(gemma_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gemma_path.read_bytes()[: 3 * MiB])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_file_header(cut)
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        read_file_header(tmp_path / "not.gguf")


class _RangeServer(BaseHTTPRequestHandler):
    """Serves one file with HTTP byte ranges, as the Hub's storage does, counting the bytes it sends."""

    data = b""
    sent: list[int] = []

    def do_GET(self) -> None:  # noqa: N802
        start, end = map(int, re.match(r"bytes=(\d+)-(\d+)", self.headers["Range"]).groups())
        chunk = self.data[start : end + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{start + len(chunk) - 1}/{len(self.data)}")
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        self.wfile.write(chunk)
        self.sent.append(len(chunk))

    def log_message(self, *args) -> None:
        pass


def test_header_read_by_byte_range_over_http(gemma_path: Path) -> None:
    """The header alone crosses the network: a few MiB of a file whose weights are the rest."""
    _RangeServer.data, _RangeServer.sent = gemma_path.read_bytes(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RangeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        read, size = range_reader(f"http://127.0.0.1:{server.server_port}/model.gguf", timeout=60)
        remote = read_header(buffered(read, 4 * MiB))
    finally:
        server.shutdown()
    local = read_file_header(gemma_path)
    assert remote.tensors == local.tensors and remote.metadata == local.metadata
    assert size == [gemma_path.stat().st_size]
    assert sum(_RangeServer.sent) <= local.data_offset + 4 * MiB < gemma_path.stat().st_size


def test_llama2_70b_on_the_desktop() -> None:
    facts = facts_of(llama2_70b_q4_k_m(), "llama-2-70b.Q4_K_M.gguf")
    # TheBloke/Llama-2-70B-GGUF lists llama-2-70b.Q4_K_M.gguf at 41.42 GB
    assert facts.weight_bytes / 1e9 == pytest.approx(41.42, abs=0.01)
    assert facts.kv_bytes_per_cell(0, "f16") * facts.n_layer == 320 * 1024  # 80 layers x 8 KV heads x 128 x (K + V) x 2 bytes
    plan = make_placement(facts, DESKTOP, Settings(n_ctx=4096, parallel=1, prefixes=1))
    assert plan.fits and not facts.is_moe
    assert 0 < plan.gpu_layers < facts.n_layer  # split between the card and RAM
    assert plan.gpu.total <= DESKTOP.vram - VRAM_MARGIN
    more = place(facts, DESKTOP, plan.settings, plan.gpu_layers + 1, 0)[0]
    assert more.total > DESKTOP.vram - VRAM_MARGIN  # the most layers that fit
    assert plan.gpu.weights + plan.cpu.weights == facts.weight_bytes
    q8 = make_placement(facts, DESKTOP, Settings(n_ctx=4096, parallel=1, prefixes=1, kv_type="q8_0", flash_attn=True))
    assert q8.gpu_layers > plan.gpu_layers  # a smaller KV cache leaves room for more layers
    assert q8.kv_bytes_per_token == pytest.approx(plan.kv_bytes_per_token * 34 / 64)


def test_mixtral_keeps_experts_in_ram_and_every_layer_on_the_gpu() -> None:
    facts = facts_of(mixtral_8x7b_q4_k_m(), "mixtral-8x7b-v0.1.Q4_K_M.gguf")
    # TheBloke/Mixtral-8x7B-v0.1-GGUF lists mixtral-8x7b-v0.1.Q4_K_M.gguf at 26.44 GB
    assert facts.weight_bytes / 1e9 == pytest.approx(26.44, abs=0.01)
    assert facts_of(mixtral_8x7b_q4_k_m(recipe="current"), "now").weight_bytes / 1e9 == pytest.approx(28.45, abs=0.01)
    assert facts.is_moe and sum(facts.expert_bytes) > 0.9 * facts.weight_bytes
    plan = make_placement(facts, DESKTOP, Settings(n_ctx=4096, parallel=1, prefixes=1))
    assert plan.fits and plan.gpu_layers == facts.n_layer + 1  # attention and the head of every layer on the GPU
    assert 0 < plan.cpu_moe < facts.n_layer  # the experts of the first layers in RAM, the rest on the card
    assert plan.gpu.total <= DESKTOP.vram - VRAM_MARGIN
    assert place(facts, DESKTOP, plan.settings, plan.gpu_layers, plan.cpu_moe - 1)[0].total > DESKTOP.vram - VRAM_MARGIN
    dense_like = max(g for g in range(facts.n_layer + 1) if place(facts, DESKTOP, plan.settings, g, 0)[0].total <= 23 * GiB)
    assert plan.decode_ceiling > make_placement(facts, Machine(vram=0, ram=64 * GiB), plan.settings).decode_ceiling
    assert dense_like < facts.n_layer  # without experts in RAM only some layers would fit


def test_a_model_too_big_for_the_machine_does_not_fit() -> None:
    facts = facts_of(llama2_70b_q4_k_m(), "70b")
    plan = make_placement(facts, Machine(vram=8 * GiB, ram=16 * GiB), Settings())
    assert not plan.fits and any("does not fit" in r for r in plan.reasons)


def _allocated(records) -> dict[str, float]:
    """MiB llama.cpp reports for the model's weights, the KV cache and the compute buffer."""
    text = "\n".join(r.getMessage() for r in records)
    return {
        "weights": sum(float(m) for m in re.findall(r"CPU_Mapped model buffer size =\s*([\d.]+) MiB", text)),
        "kv": sum(float(m) for m in re.findall(r"llama_kv_cache: size =\s*([\d.]+) MiB", text)),
        "compute": sum(float(m) for m in re.findall(r"CPU compute buffer size =\s*([\d.]+) MiB", text)),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kv_type", "kv_budget"), [("f16", None), ("q8_0", None), ("q4_0", None), ("f16", 3000)], ids=["f16", "q8_0", "q4_0", "pool"]
)
def test_plan_of_the_bundled_model_equals_what_llama_cpp_allocates(gemma_path: Path, caplog, kv_type, kv_budget) -> None:
    facts = model_facts(str(gemma_path))
    settings = Settings(n_ctx=2048, parallel=2, prefixes=2, kv_type=kv_type, flash_attn=kv_type != "f16", kv_budget=kv_budget)
    with caplog.at_level(logging.DEBUG, logger="untuned.llama_cpp.native"):
        backend = LlamaCppBackend(gemma_path, n_ctx=2048, slots=2, prefixes=2, kv_type=kv_type, kv_budget=kv_budget)
        backend.close()
    allocated = _allocated(caplog.records)
    plan = make_placement(facts, Machine(vram=0, ram=64 * GiB), settings)
    assert plan.cpu.weights / MiB == pytest.approx(allocated["weights"], abs=0.01)
    assert plan.cpu.kv / MiB == pytest.approx(allocated["kv"], abs=0.01)
    assert compute_bytes(facts, settings) / MiB == pytest.approx(allocated["compute"], rel=0.02)  # an estimate


@pytest.mark.slow
def test_q8_0_kv_with_flash_attention_answers_on_the_cpu(gemma_path: Path) -> None:
    from untuned import Assistant, Sampling
    from untuned.prompt import load_prompt

    answers = {}
    for kv_type in ("f16", "q8_0"):
        backend = LlamaCppBackend(gemma_path, n_ctx=2048, kv_type=kv_type)
        try:
            assert backend.engine.ctx.flash_attn == (kv_type != "f16")
            bot = Assistant(backend, load_prompt("helpful"), Sampling(max_tokens=24, temperature=0))
            answers[kv_type] = bot.ask("What is the capital of France?").text
        finally:
            backend.close()
    assert "Paris" in answers["f16"] and "Paris" in answers["q8_0"]
    with pytest.raises(ModelLoadError, match="needs flash attention"):
        LlamaCppBackend(gemma_path, kv_type="q8_0", flash_attn="off")


def test_tensors_kept_in_ram_reach_llama_cpp(gemma_path: Path, caplog) -> None:
    """The override array is read by llama.cpp (it says it places tensors by override); a dense model asked
    to keep experts in RAM is refused by name."""
    with caplog.at_level(logging.DEBUG, logger="untuned.llama_cpp.native"):
        NativeModel(gemma_path, overrides=CpuOverrides(r"^blk\.(?:0|1)\.ffn_up")).close()
    assert "tensor overrides to CPU" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="untuned.llama_cpp.native"):
        NativeModel(gemma_path).close()
    assert "tensor overrides" not in caplog.text
    with pytest.raises(ModelLoadError, match="no expert weights"):
        LlamaCppBackend(gemma_path, cpu_moe=4)


def test_gpu_layers_auto_offloads_nothing_on_a_cpu_build(gemma_path: Path) -> None:
    backend = LlamaCppBackend(gemma_path, n_ctx=512, gpu_layers="auto", cpu_moe="auto")
    try:
        assert (backend.gpu_layers, backend.cpu_moe, backend.plan) == (0, 0, None)
    finally:
        backend.close()


def test_plan_command() -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["plan", "default", "--vram", "24GiB", "--ram", "64GiB", "--json"])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.output)
    assert record["fits"] and record["gpu_layers"] == 19 and record["model"]["n_layer"] == 18
    table = runner.invoke(app, ["plan", "--ram", "64GiB", "--kv-type", "q8_0"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "q8_0, 10 KiB per token" in table.output and "flash attention │ on" in table.output
    small = runner.invoke(app, ["plan", "--ram", "2GiB"])
    assert small.exit_code == 1 and "does not fit" in small.output
    refused = runner.invoke(app, ["plan", "--kv-type", "q8_0", "--flash-attn", "off"])
    assert refused.exit_code == 2 and "needs flash attention" in refused.output


# --- llama.cpp as the planner's oracle: sparse files of real layouts, its own no_alloc accounting ---------------

RMS = {"llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.dimension_count": 128}
LAYOUTS = {  # name: (tensor table, metadata llama.cpp needs that the table leaves out)
    "llama-2-70b": (llama2_70b_q4_k_m, RMS),
    "mixtral-8x7b": (mixtral_8x7b_q4_k_m, RMS),
    "llama-3-70b": (llama3_70b_q4_k_m, RMS),
    "qwen2.5-72b": (qwen25_72b_q4_k_m, None),
    "gemma-3-27b": (gemma3_27b_q4_k_m, None),
}
ORACLE_SETTINGS = [  # (context of each sequence, sequences, flash attention, one pool)
    (512, 1, False, False),
    (4096, 1, False, False),
    (4096, 1, True, False),
    (8192, 1, True, False),
    (4096, 3, False, False),
    (4096, 4, False, True),  # one pool of 16,384 cells: attended whole, whatever the window
    (4096, 4, True, True),
]


@pytest.fixture(scope="module")
def sparse_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sparse")
    return {name: write_sparse(table(), folder / f"{name}.gguf", extra=extra) for name, (table, extra) in LAYOUTS.items()}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_plan_equals_llama_cpp_s_own_accounting_for_real_layouts(sparse_files, name: str) -> None:
    """KV and compute of the plan against llama.cpp's no_alloc figures for the same header: within 5% at every
    setting (the KV to the byte), pool and flash attention included."""
    path = sparse_files[name]
    facts = model_facts(str(path))
    for n_ctx, sequences, flash, pool in ORACLE_SETTINGS:
        settings = Settings(
            n_ctx=n_ctx, parallel=sequences, prefixes=0, flash_attn=flash, kv_budget=n_ctx * sequences if pool else None
        )
        kv_type = "q8_0" if flash and not pool else "f16"
        settings = replace(settings, kv_type=kv_type)
        truth = llama_cpp_accounting(
            path, n_ctx=n_ctx * sequences, n_seq=sequences, flash_attn=flash, kv_type=kv_type, unified=pool
        )
        plan = make_placement(facts, Machine(vram=0, ram=1024 * GiB), settings)
        where = (name, n_ctx, sequences, flash, pool)
        assert (plan.cpu.kv + plan.gpu.kv) / MiB == pytest.approx(truth.kv, rel=1e-3), where
        assert compute_bytes(facts, settings) / MiB == pytest.approx(truth.compute, rel=0.05), where


def test_sizes_the_help_suggests_in_words_give_the_plan_people_expect(sparse_files) -> None:
    """--vram 24 --ram 64 (bare numbers are GiB): Llama-2-70B splits across the card and RAM and fits."""
    result = CliRunner().invoke(app, ["plan", str(sparse_files["llama-2-70b"]), "--vram", "24", "--ram", "64", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert 30 < plan["gpu_layers"] < 80 and plan["fits"]


def test_a_half_given_is_held_and_the_other_planned_within_the_budget() -> None:
    facts = facts_of(mixtral_8x7b_q4_k_m(), "mixtral")
    settings = Settings(n_ctx=4096, parallel=1, prefixes=1)
    held_moe = make_placement(facts, DESKTOP, settings, cpu_moe=0)  # every expert on the GPU: fewer layers
    assert held_moe.cpu_moe == 0 and held_moe.fits and held_moe.gpu.total <= DESKTOP.vram - VRAM_MARGIN
    assert held_moe.gpu_layers < facts.n_layer
    held_layers = make_placement(facts, DESKTOP, settings, gpu_layers=33)  # every layer and the head: experts to RAM
    assert held_layers.gpu_layers == 33 and held_layers.cpu_moe > 0 and held_layers.fits


def test_when_nothing_fits_the_least_bad_split_is_planned_and_the_shortfall_said() -> None:
    """16 GiB of RAM and a 24 GiB card for Llama-2-70B: offloading nothing (the old answer) needs the whole model
    in RAM; the plan takes the split whose larger shortfall is smallest and says by how much each memory falls short."""
    facts = facts_of(llama2_70b_q4_k_m(), "70b")
    machine = Machine(vram=24 * GiB, ram=16 * GiB)
    plan = make_placement(facts, machine, Settings(n_ctx=4096, parallel=1, prefixes=1))
    assert not plan.fits and plan.gpu_layers > 30
    nothing = place(facts, machine, plan.settings, 0, 0)[1]
    assert plan.cpu.total < nothing.total
    over_gpu = plan.gpu.total - (machine.vram - VRAM_MARGIN)
    over_ram = plan.cpu.total - (machine.ram - 4 * GiB)
    for layers in range(facts.n_layer + 2):  # no other split has a smaller larger shortfall
        gpu, cpu = place(facts, machine, plan.settings, layers, 0)
        assert max(gpu.total - (machine.vram - VRAM_MARGIN), cpu.total - (machine.ram - 4 * GiB)) >= max(over_gpu, over_ram)
    assert any("does not fit: over the GPU by" in reason and "RAM by" in reason for reason in plan.reasons), plan.reasons


def test_the_per_expert_mixtral_layout_is_refused_before_loading_with_what_to_download(tmp_path: Path) -> None:
    path = write_sparse(mixtral_per_expert_q4_k_m(), tmp_path / "mixtral-8x7b-v0.1.Q4_K_M.gguf", extra=RMS)
    facts = model_facts(str(path))
    assert facts.is_moe and sum(facts.expert_bytes) > 0.9 * facts.weight_bytes  # recognised as experts
    result = CliRunner().invoke(app, ["plan", str(path), "--vram", "24", "--ram", "64"])
    assert result.exit_code == 2 and "one tensor per expert" in result.output and "b3990" in result.output
    with pytest.raises(ModelLoadError, match="one tensor per expert"):
        LlamaCppBackend(path)


def test_serve_plans_the_window_the_engine_allocates(sparse_files) -> None:
    """No --n-ctx: Llama-2's trained window (4096), not the 8192 cap, is what is planned and allocated."""
    from untuned.placement import engine_window

    facts = model_facts(str(sparse_files["llama-2-70b"]))
    assert engine_window(None, facts.n_ctx_train) == 4096 and engine_window(None, 131072) == 8192
    assert engine_window(2048, 4096) == 2048


def test_a_pinned_placement_is_kept_while_it_fits_and_replanned_when_not(gemma_path: Path, tmp_path: Path) -> None:
    """A restart with a little less free VRAM keeps the placement of the first load (its saved prefixes stay
    valid); one that no longer fits, or is out of range, is planned again."""
    from untuned.backends.llamacpp.prefix_store import pin_plan, pinned_plan
    from untuned.placement import placement

    settings = Settings(n_ctx=2048, parallel=1, prefixes=1)
    fresh = placement(gemma_path, "auto", "auto", settings, vram=4 * GiB)
    assert fresh[0] == 19  # 18 layers and the head
    assert placement(gemma_path, "auto", "auto", settings, vram=4 * GiB, pinned=(10, 0))[:2] == (10, 0)
    assert placement(gemma_path, "auto", "auto", settings, vram=4 * GiB, pinned=(500, 0))[:2] == fresh[:2]
    tight = int(VRAM_MARGIN + 0.05 * GiB)  # too little for 19 layers
    assert placement(gemma_path, "auto", "auto", settings, vram=tight, pinned=(19, 0))[0] < 19
    pin_plan(tmp_path, "key", (10, 0))
    assert pinned_plan(tmp_path, "key") == (10, 0) and pinned_plan(tmp_path, "other") is None
    (tmp_path / "plans.json").write_text("not json")
    assert pinned_plan(tmp_path, "key") is None


def test_a_renamed_model_file_keeps_its_saved_prefixes(gemma_path: Path, tmp_path: Path) -> None:
    from untuned.backends.llamacpp.prefix_store import PrefixStore

    renamed = tmp_path / "another-name.gguf"
    renamed.symlink_to(gemma_path)
    prefix = tuple(range(2, 100))
    stores = [
        PrefixStore(tmp_path / "store", model=p, settings={"kv_type": "f16"}, limit_bytes=1 << 30) for p in (gemma_path, renamed)
    ]
    assert stores[0]._path(prefix) == stores[1]._path(prefix)
    stores[0].save(prefix, b"state")
    assert stores[1].load(prefix) == b"state"


def test_a_draft_model_s_memory_is_planned_before_the_model(sparse_files, tmp_path: Path) -> None:
    """--draft: the draft's layers, head and KV (one stream per slot) go on the GPU first; the 70B gets what is left,
    so it keeps fewer layers there, and the draft's share equals its own plan with everything offloaded."""
    llama, settings = model_facts(str(sparse_files["llama-2-70b"])), Settings(n_ctx=4096, parallel=1, prefixes=2)
    draft_path = write_sparse(tinyllama_1b_q4_k_m(), tmp_path / "tinyllama-1.1b.Q4_K_M.gguf", extra=RMS)
    draft = model_facts(str(draft_path))
    alone = make_placement(llama, DESKTOP, settings)
    drafted = make_placement(llama, DESKTOP, settings, draft=draft)
    own = make_placement(draft, Machine(vram=1024 * GiB, ram=1024 * GiB), replace(settings, prefixes=0))
    assert drafted.draft == (own.gpu, own.cpu) and own.gpu_layers == draft.n_layer + 1
    assert 0.5 * GiB < drafted.draft[0].total < 1.5 * GiB  # a 1.1B at Q4_K_M, its KV and compute
    assert drafted.fits and drafted.gpu.total + drafted.draft[0].total <= DESKTOP.vram - VRAM_MARGIN
    assert drafted.gpu_layers < alone.gpu_layers
    result = CliRunner().invoke(
        app, ["plan", str(sparse_files["llama-2-70b"]), "--vram", "24", "--ram", "64", "--draft", str(draft_path)]
    )
    assert result.exit_code == 0, result.output
    assert "draft model" in result.output and f"--gpu-layers {drafted.gpu_layers}" in plain(result.output)
