"""``untuned plan MODEL``: where a GGUF model's layers, experts and KV cache go on this machine (or the one
described), from its header alone."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from untuned.backends.protocol import FlashAttention, KvType, LoadOptions
from untuned.cli.common import friendly, out, record_option
from untuned.errors import ModelLoadError
from untuned.placement import (
    GiB,
    Machine,
    Memory,
    Placement,
    Settings,
    engine_window,
    make_placement,
    model_facts,
    parse_size,
    total_ram,
)


def _option(name: str):
    """The option of a load setting as LoadOptions declares it (help, bounds): the same as serve's."""
    return record_option(LoadOptions, name)[1]


def _default(name: str):
    return LoadOptions.model_fields[name].default


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def _memory(memory: Memory) -> str:
    return f"{_gib(memory.total)} = weights {_gib(memory.weights)} + KV {_gib(memory.kv)} + compute {_gib(memory.compute)}"


def plan_table(plan: Placement) -> Table:
    facts, s = plan.model, plan.settings
    table = Table(
        title=f"{facts.name}: {facts.architecture}, {facts.n_layer} layers, {_gib(facts.file_bytes)} file", show_header=False
    )
    table.add_column(style="bold")
    table.add_column()
    if facts.is_moe:
        moe = (
            "every layer's" if plan.cpu_moe >= facts.n_layer else f"the first {plan.cpu_moe} layers'" if plan.cpu_moe else "none"
        )
        experts = f"{facts.n_expert} experts, {facts.n_expert_used} used per token; in RAM: {moe}"
    else:
        experts = "dense (no experts)"
    head = "with the output head" if plan.gpu_layers > facts.n_layer else "the output head in RAM"
    rows = [
        ("GPU layers", f"{min(plan.gpu_layers, facts.n_layer)} of {facts.n_layer} ({head})  →  --gpu-layers {plan.gpu_layers}"),
        ("experts", experts + (f"  →  --cpu-moe {plan.cpu_moe}" if facts.is_moe else "")),
        (
            "KV cache",
            f"{s.kv_type}, {plan.kv_bytes_per_token / 1024:.0f} KiB per token; {s.parallel} + {s.prefixes} prefix sequences "
            + (f"in one pool of {s.kv_budget} cells" if s.kv_budget else f"of {s.n_ctx} tokens each")
            + f": {_gib(plan.gpu.kv + plan.cpu.kv)}",
        ),
        ("flash attention", "on" if s.flash_attn else "off"),
        ("VRAM", _memory(plan.gpu)),
        ("RAM", _memory(plan.cpu)),
        *([("draft model", f"VRAM {_memory(plan.draft[0])}; RAM {_memory(plan.draft[1])}")] if plan.draft else []),
        ("fits", "yes" if plan.fits else "[red]no[/red]"),
        (
            "decode ceiling",
            f"{plan.decode_ceiling:.1f} tokens/s if every token read its weights once at "
            f"{plan.machine.gpu_bandwidth:g} GB/s (GPU) and {plan.machine.ram_bandwidth:g} GB/s (RAM): "
            "a bound, not a measurement",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    for reason in plan.reasons:
        table.add_row("", f"[dim]{reason}[/dim]")
    return table


@friendly
def plan_command(
    model: Annotated[str, typer.Argument(help="A GGUF model: default, a .gguf path, hf:org/repo:QUANT.")] = "default",
    vram: Annotated[
        str | None,
        typer.Option(
            help="GPU memory: 24 (GiB when bare), 24GiB, 24G, 24000MB (default: the first GPU's free memory; 0 on a CPU build)."
        ),
    ] = None,
    ram: Annotated[str | None, typer.Option(help="RAM: 64 (GiB when bare), 64GiB, 64000MB (default: this machine's).")] = None,
    n_ctx: Annotated[int | None, record_option(LoadOptions, "n_ctx", "--ctx")[1]] = _default("n_ctx"),
    parallel: Annotated[int, _option("parallel")] = _default("parallel"),
    prefixes: Annotated[int, typer.Option(min=1, help="Prompt prefixes kept evaluated (each a sequence).")] = 2,
    kv_type: Annotated[KvType, _option("kv_type")] = _default("kv_type"),
    flash_attn: Annotated[FlashAttention, _option("flash_attn")] = _default("flash_attn"),
    kv_budget: Annotated[int | None, _option("kv_budget")] = _default("kv_budget"),
    gpu_bandwidth: Annotated[float, typer.Option(help="GPU memory bandwidth, GB/s, for the speed ceiling.")] = 936.0,
    ram_bandwidth: Annotated[float, typer.Option(help="RAM bandwidth, GB/s, for the speed ceiling.")] = 51.2,
    draft: Annotated[str | None, _option("draft")] = _default("draft"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Plan MODEL onto a GPU and RAM from its GGUF header (no weights loaded): layers on the GPU, a MoE
    model's experts, the KV cache, expected VRAM and RAM, whether it fits, and the numbers that decided it."""
    from untuned.backends.llamacpp.native import attention_choice

    flash = attention_choice(kv_type, flash_attn)
    if vram is None:
        from untuned.backends.llamacpp.devices import gpu_free_memory

        vram_bytes = gpu_free_memory()
    else:
        vram_bytes = parse_size(vram)
    machine = Machine(
        vram=vram_bytes, ram=parse_size(ram) if ram else total_ram(), gpu_bandwidth=gpu_bandwidth, ram_bandwidth=ram_bandwidth
    )
    facts = model_facts(model)
    problem = facts.layout_problem()
    if problem:
        raise ModelLoadError(problem)
    drafted = model_facts(draft) if draft is not None and draft != "prompt-lookup" else None
    ctx = engine_window(n_ctx, facts.n_ctx_train)  # as a load of the model would size it
    plan = make_placement(facts, machine, Settings(ctx, parallel, prefixes, kv_type, flash, kv_budget), draft=drafted)
    if as_json:
        record = asdict(plan)
        record["model"] = {
            k: v for k, v in record["model"].items() if k not in ("layer_bytes", "expert_bytes", "swa", "n_head_kv")
        }
        out.print_json(json.dumps(record))
    else:
        out.print(plan_table(plan))
    if not plan.fits:
        raise typer.Exit(1)
