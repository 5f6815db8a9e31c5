"""Planning a model onto a machine before loading it (``untuned plan``, ``--gpu-layers auto``): the GGUF
header read from a local file, from the Hugging Face cache, or from the Hub by byte range; the
placement fitted to the GPU's and RAM's sizes (:mod:`untuned.placement.fit`)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from untuned.errors import ModelLoadError, ModelNotFoundError, UntunedError
from untuned.placement.facts import ModelFacts, facts_of
from untuned.placement.fit import DEFAULT_MAX_CTX, GiB, Machine, Memory, Placement, Settings, make_placement
from untuned.placement.header import GgufHeader, TensorInfo, read_file_header, read_header

__all__ = [
    "GiB",
    "GgufHeader",
    "Machine",
    "Memory",
    "ModelFacts",
    "Placement",
    "Settings",
    "TensorInfo",
    "facts_of",
    "make_placement",
    "model_facts",
    "parse_size",
    "read_file_header",
    "read_header",
]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes of a size written ``24GiB``, ``24G``, ``24GB``, ``24000MB`` (GB, MB: powers of 1000; GiB and a
    bare G: of 1024) or a bare number, which is GiB (``--vram 24`` is a 24 GiB card, as people say it)."""
    match = _SIZE.match(text)
    if not match:
        raise UntunedError(f"{text!r} is not a size: write it like 24 (GiB), 24GiB, 64G or 24000MB")
    number, unit, binary = float(match.group(1)), match.group(2).lower(), match.group(3)
    if not unit and not binary:
        return int(number * GiB)
    power = "kmgt".index(unit) + 1 if unit else 0
    base = 1000 if (unit and not binary and text.strip().lower().endswith("b")) else 1024
    return int(number * base**power)


def model_facts(spec: str) -> ModelFacts:
    """The facts of the GGUF model ``spec`` names (default, a path, hf:...), from its header(s) alone: a
    split file's parts are read together; a Hub file comes from the cache, else by byte range."""
    from untuned.spec import ModelSpec, default_gguf_path

    parsed = ModelSpec.parse(spec)
    if parsed.kind == "default":
        return facts_of(read_file_header(default_gguf_path()), "gemma-3-270m-base")
    if parsed.kind == "gguf":
        return facts_of(_merged([read_file_header(p) for p in _local_parts(Path(parsed.location))]), Path(parsed.location).name)
    if parsed.kind == "hub-gguf":
        return facts_of(_hub_header(parsed.location), spec)
    raise ModelLoadError(f"untuned plan reads GGUF models (default, a .gguf path, hf:org/repo:QUANT); {spec!r} is not one")


def _local_parts(path: Path) -> list[Path]:
    match = _SPLIT.search(path.name)
    if not match:
        return [path]
    total = int(match.group(2))
    return [path.with_name(_SPLIT.sub(f"-{i:05d}-of-{total:05d}.gguf", path.name)) for i in range(1, total + 1)]


def _merged(headers: list[GgufHeader]) -> GgufHeader:
    """One header for a split file: the first part's metadata, every part's tensors and bytes."""
    first = headers[0]
    tensors = tuple(t for h in headers for t in h.tensors)
    size = sum(h.file_bytes or 0 for h in headers) or None
    return GgufHeader(first.metadata, tensors, first.data_offset, size)


def _hub_header(location: str) -> GgufHeader:
    from untuned import hub
    from untuned.placement.header import buffered

    gguf = hub.parse(location)
    files = hub.repo_files(gguf.repo)
    if files is None:
        raise ModelNotFoundError(f"hf:{location}: neither the Hub nor the cache lists {gguf.repo}")
    wanted = hub.choose(files, gguf)
    cached = hub.cached_paths(gguf.repo, wanted)
    if cached is not None:
        return _merged([read_file_header(p) for p in cached])
    if hub.offline():
        raise ModelNotFoundError(f"hf:{location} is not in the cache and HF_HUB_OFFLINE is set: its header cannot be read")
    headers = []
    for name in wanted:
        read, size = hub.remote_reader(gguf.repo, name)
        header = read_header(buffered(read, 4 << 20))
        headers.append(GgufHeader(header.metadata, header.tensors, header.data_offset, size[0] if size else None))
    return _merged(headers)


def total_ram() -> int:
    """This machine's physical memory in bytes."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def engine_window(n_ctx: int | None, trained: int) -> int:
    """The window of each sequence the engine allocates: ``n_ctx``, else the model's trained window capped at
    DEFAULT_MAX_CTX (8192): 4096 for Llama-2, not 8192."""
    return n_ctx or (min(trained, DEFAULT_MAX_CTX) if trained > 0 else DEFAULT_MAX_CTX)


def placement(
    path: Path,
    gpu_layers: int | str,
    cpu_moe: int | str,
    settings: Settings,
    *,
    vram: int,
    n_ctx: int | None = None,
    pinned: tuple[int, int] | None = None,
    draft: str | None = None,
) -> tuple[int, int, Placement | None]:
    """(gpu_layers, cpu_moe, the plan behind them) for a model about to load: ``auto`` values planned for
    ``vram`` bytes of free GPU memory (0 on a CPU-only build: nothing offloaded) and the window the engine will
    allocate (``n_ctx``, else the model's capped at 8192); a number given for one half is held while the other
    is planned around it. Experts kept in RAM for a model without experts are refused, naming the model; so is
    a file whose experts llama.cpp can no longer load. ``pinned``: the placement an earlier load of the same file
    and options chose, kept while it still fits (so a restart with a little less free VRAM keeps its layers, and
    its prefixes saved on disk stay valid). ``draft``: a draft model (a GGUF spec) whose memory comes first."""
    try:
        facts = model_facts(str(path))
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"could not load {path}: its GGUF header cannot be read ({exc}). The file may be truncated or corrupt: "
            "re-download it."
        ) from None
    problem = facts.layout_problem()
    if problem:
        raise ModelLoadError(problem)
    if cpu_moe not in ("auto", 0) and not facts.is_moe:
        raise ModelLoadError(f"--cpu-moe {cpu_moe}: {path.name} has no expert weights (it is not a mixture of experts)")
    needs_plan = "auto" in (gpu_layers, cpu_moe) and vram > 0
    if not needs_plan:
        return (0 if gpu_layers == "auto" else int(gpu_layers)), (0 if cpu_moe == "auto" else int(cpu_moe)), None
    settings = replace(settings, n_ctx=engine_window(n_ctx, facts.n_ctx_train))
    held = {
        "gpu_layers": None if gpu_layers == "auto" else int(gpu_layers),
        "cpu_moe": None if cpu_moe == "auto" else int(cpu_moe),
    }
    if held["gpu_layers"] == -1:
        held["gpu_layers"] = facts.n_layer + 1
    machine = Machine(vram=vram, ram=total_ram())
    drafted = model_facts(draft) if draft is not None else None
    if pinned is not None and 0 <= pinned[0] <= facts.n_layer + 1 and 0 <= pinned[1] <= facts.n_layer:
        kept = make_placement(facts, machine, settings, gpu_layers=pinned[0], cpu_moe=pinned[1], draft=drafted)
        if kept.fits and all(held[k] in (None, v) for k, v in zip(("gpu_layers", "cpu_moe"), pinned)):
            return kept.gpu_layers, kept.cpu_moe, kept
    plan = make_placement(facts, machine, settings, **held, draft=drafted)
    return plan.gpu_layers, plan.cpu_moe, plan
