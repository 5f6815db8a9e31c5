"""Fit a model to a machine: how many layers go to the GPU, where a MoE model's experts go, and what
that costs in VRAM and RAM, from the model's GGUF header alone (no weights loaded).

The rules are llama.cpp's, as untuned's engine uses it: the last ``gpu_layers`` layers are offloaded
(``n_layer + 1`` also offloads the output head); the token embeddings stay in RAM; each offloaded
layer's KV cache is on the GPU; ``cpu_moe`` keeps the expert weights of the first layers in RAM while
the rest of those layers runs on the GPU (what llama.cpp's ``--n-cpu-moe`` does). The KV cache has
``parallel + prefixes`` sequences, each a stream of the whole window (untuned's exact mode), or one
pool of ``kv_budget`` cells; sliding-window layers hold the window plus one batch. The compute buffer is
the largest phase of llama.cpp's graph (:func:`compute_bytes`), held to llama.cpp's own no_alloc accounting
within 5% by the tests; the decode speed is a ceiling from memory bandwidth, never a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from untuned.placement.facts import ModelFacts

GiB = 1 << 30
DEFAULT_MAX_CTX = 8192  # a local model's context window when none is asked for: the model's, at most this
VRAM_MARGIN = 1 * GiB  # left free on the GPU (the desktop, the driver): llama.cpp's own --fit margin
RAM_MARGIN = 4 * GiB  # left free in RAM for the system and the server
UBATCH = 512  # tokens evaluated per step (the engine's batch)


@dataclass(frozen=True)
class Machine:
    """The memory a plan may use, and the bandwidths its speed ceiling assumes (GB/s)."""

    vram: int = 0
    ram: int = 64 * GiB
    gpu_bandwidth: float = 936.0  # RTX 3090's published figure
    ram_bandwidth: float = 51.2  # two channels of DDR4-3200, the published figure


@dataclass(frozen=True)
class Settings:
    """How the model will run: the window, the sequences, the KV cache's type, flash attention."""

    n_ctx: int = 4096
    parallel: int = 1
    prefixes: int = 2
    kv_type: str = "f16"
    flash_attn: bool = False
    kv_budget: int | None = None


@dataclass(frozen=True)
class Memory:
    weights: int = 0
    kv: int = 0
    compute: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


@dataclass(frozen=True)
class Placement:
    """Where everything goes, what it costs, whether it fits, and the numbers that decided it."""

    model: ModelFacts
    machine: Machine
    settings: Settings
    gpu_layers: int
    cpu_moe: int
    gpu: Memory
    cpu: Memory
    kv_bytes_per_token: float
    decode_ceiling: float  # tokens/s, from memory bandwidth
    fits: bool
    reasons: list[str] = field(default_factory=list)
    draft: tuple[Memory, Memory] | None = None  # a draft model's (GPU, RAM) memory (--draft), taken off the budgets


def kv_cells(facts: ModelFacts, settings: Settings, layer: int) -> int:
    """KV cells ``layer`` holds across every sequence."""
    sequences = settings.parallel + settings.prefixes
    if settings.kv_budget is not None:
        total = -(-settings.kv_budget // 256) * 256
        window = -(-(facts.sliding_window * sequences + UBATCH) // 256) * 256
        return min(total, window) if facts.swa[layer] else total
    per_stream = settings.n_ctx
    if facts.swa[layer]:
        per_stream = min(per_stream, -(-(facts.sliding_window + UBATCH) // 256) * 256)
    return per_stream * sequences


def attended(facts: ModelFacts, settings: Settings, *, swa: bool) -> int:
    """KV cells one ubatch attends over in a layer (of the sliding-window kind with ``swa``): its stream's, or the
    whole pool's when the sequences share one (a pool is attended whole, whatever --ctx says)."""
    if settings.kv_budget is not None:
        pool = -(-settings.kv_budget // 256) * 256
        if not swa:
            return pool
        return min(pool, -(-(facts.sliding_window * (settings.parallel + settings.prefixes) + UBATCH) // 256) * 256)
    if not swa:
        return settings.n_ctx
    return min(settings.n_ctx, -(-(facts.sliding_window + UBATCH) // 256) * 256)


def compute_bytes(facts: ModelFacts, settings: Settings) -> int:
    """llama.cpp's compute buffer: the largest of three phases of its graph, as its allocator reuses memory.
    A layer's feed-forward (three ``n_ff``-wide activations, per used expert for a MoE model, beside four of the
    model's width), or without flash attention its attention (the scores of every head over the attended cells,
    beside the query, key and value activations), each with the attention masks alive throughout the layers
    (f32, or f16 with flash attention); or the output (the logits of a batch). Held to llama.cpp's own figures
    (a no_alloc load) within 5% on Llama-2/3-70B, Mixtral, Qwen2.5-72B and Gemma-3-27B tables
    (tests/test_plan.py)."""
    rows = 4 * UBATCH  # bytes of one f32 value per token of the batch
    embd_kv = max(facts.n_head_kv) * facts.key_length
    q_dim = facts.n_head * facts.key_length
    width = facts.n_ff * (facts.n_expert_used if facts.is_moe else 1)
    ffn = 3 * width + 4 * facts.n_embd + (0 if settings.flash_attn else 2 * embd_kv)
    full = attended(facts, settings, swa=False)
    masks = full + (attended(facts, settings, swa=True) if facts.sliding_window else 0)
    mask_bytes = masks * UBATCH * (2 if settings.flash_attn else 4)
    layers = ffn
    if not settings.flash_attn:
        layers = max(ffn, facts.n_head * full + 5 * facts.n_embd + 2 * embd_kv + (2 * q_dim if facts.qk_norm else 0))
    return max(rows * layers + mask_bytes, rows * (facts.n_vocab + 2 * facts.n_embd))


def place(facts: ModelFacts, machine: Machine, settings: Settings, gpu_layers: int, cpu_moe: int) -> tuple[Memory, Memory]:
    """The (GPU, RAM) memory of one placement."""
    first_gpu = facts.n_layer - min(gpu_layers, facts.n_layer)
    gpu_w = cpu_w = gpu_kv = cpu_kv = 0
    for layer in range(facts.n_layer):
        kv = int(kv_cells(facts, settings, layer) * facts.kv_bytes_per_cell(layer, settings.kv_type))
        experts = facts.expert_bytes[layer]
        if layer >= first_gpu:
            gpu_w += facts.layer_bytes[layer] + (0 if layer < cpu_moe else experts)
            cpu_w += experts if layer < cpu_moe else 0
            gpu_kv += kv
        else:
            cpu_w += facts.layer_bytes[layer] + experts
            cpu_kv += kv
    head_on_gpu = gpu_layers > facts.n_layer
    gpu_w += facts.head_on_gpu_bytes if head_on_gpu else 0
    cpu_w += facts.input_bytes + (0 if head_on_gpu else facts.output_bytes)
    compute = compute_bytes(facts, settings)
    host = 4 * UBATCH * 6 * facts.n_embd  # activations passed between RAM and GPU layers
    if gpu_layers > 0:
        return Memory(gpu_w, gpu_kv, compute), Memory(cpu_w, cpu_kv, host)
    return Memory(gpu_w, gpu_kv, 0), Memory(cpu_w, cpu_kv, compute)


def _ceiling(facts: ModelFacts, machine: Machine, gpu_layers: int, cpu_moe: int) -> float:
    """Tokens/s if every step reads its weights once at full bandwidth (a MoE model reads its active experts)."""
    share = facts.n_expert_used / facts.n_expert if facts.is_moe else 1.0
    first_gpu = facts.n_layer - min(gpu_layers, facts.n_layer)
    gpu = cpu = 0.0
    for layer in range(facts.n_layer):
        experts = facts.expert_bytes[layer] * share
        if layer >= first_gpu:
            gpu += facts.layer_bytes[layer] + (0 if layer < cpu_moe else experts)
            cpu += experts if layer < cpu_moe else 0
        else:
            cpu += facts.layer_bytes[layer] + experts
    head = facts.head_on_gpu_bytes
    gpu, cpu = (gpu + head, cpu) if gpu_layers > facts.n_layer else (gpu, cpu + head)
    seconds = gpu / (machine.gpu_bandwidth * 1e9) + cpu / (machine.ram_bandwidth * 1e9)
    return 1 / seconds if seconds else 0.0


def _fits(gpu: Memory, cpu: Memory, machine: Machine) -> bool:
    return gpu.total <= max(machine.vram - VRAM_MARGIN, 0) and cpu.total <= machine.ram - RAM_MARGIN


def candidates(facts: ModelFacts, *, gpu_layers: int | None = None, cpu_moe: int | None = None) -> list[tuple[int, int]]:
    """(gpu_layers, cpu_moe) from the most the GPU could hold to the least: every layer and the head,
    then (MoE) the experts of more and more layers kept in RAM, then fewer layers on the GPU. A half given
    (``gpu_layers`` or ``cpu_moe``) is held, and only the other is planned."""
    every = facts.n_layer + 1
    if gpu_layers is not None:
        moes = range(0, facts.n_layer + 1) if facts.is_moe and cpu_moe is None else [cpu_moe or 0]
        return [(gpu_layers, moe) for moe in moes]
    if cpu_moe is not None:
        return [(layers, cpu_moe) for layers in range(every, -1, -1)]
    found = [(every, 0)]
    if facts.is_moe:
        found += [(every, moe) for moe in range(1, facts.n_layer + 1)]
        return found + [(layers, facts.n_layer) for layers in range(facts.n_layer, -1, -1)]
    return found + [(layers, 0) for layers in range(facts.n_layer, -1, -1)]


def shortfall(gpu: Memory, cpu: Memory, machine: Machine) -> int:
    """Bytes by which the larger of the two memories is over its budget (0 when both fit)."""
    return max(gpu.total - max(machine.vram - VRAM_MARGIN, 0), cpu.total - (machine.ram - RAM_MARGIN), 0)


def draft_memory(draft: ModelFacts, settings: Settings, *, on_gpu: bool) -> tuple[Memory, Memory]:
    """A draft model's (GPU, RAM) memory as the engine loads it (``--draft``): every layer and its head on the GPU
    when there is one; a KV stream of the whole window for each slot (no prefix sequences, no pool); its own
    compute buffer."""
    own = replace(settings, prefixes=0, kv_budget=None)
    return place(draft, Machine(), own, draft.n_layer + 1 if on_gpu else 0, 0)


def make_placement(
    facts: ModelFacts,
    machine: Machine,
    settings: Settings,
    *,
    gpu_layers: int | None = None,
    cpu_moe: int | None = None,
    draft: ModelFacts | None = None,
) -> Placement:
    """The placement that puts the most on the GPU and fits both memories; ``gpu_layers`` or ``cpu_moe`` given
    holds that half and plans the other. When none fits, the one whose larger shortfall is smallest, marked as
    not fitting, with what is missing and by how much. A ``draft`` model's memory is taken off both budgets first."""
    if draft is not None:
        drafted = draft_memory(draft, settings, on_gpu=machine.vram > 0)
        left = replace(
            machine, vram=max(machine.vram - drafted[0].total, 1) if machine.vram else 0, ram=machine.ram - drafted[1].total
        )
        plan = make_placement(facts, left, settings, gpu_layers=gpu_layers, cpu_moe=cpu_moe)
        gib = lambda n: f"{n / GiB:.2f} GiB"  # noqa: E731
        line = f"the draft model {draft.name} takes {gib(drafted[0].total)} of GPU memory and {gib(drafted[1].total)} of RAM"
        return replace(
            plan, machine=machine, draft=drafted, reasons=[line + "; the budgets below are what it leaves", *plan.reasons]
        )
    choices = candidates(facts, gpu_layers=gpu_layers, cpu_moe=cpu_moe) if machine.vram > 0 else [(0, 0)]
    placed = [(g, m, *place(facts, machine, settings, g, m)) for g, m in choices]
    chosen = next(((g, m) for g, m, gpu, cpu in placed if _fits(gpu, cpu, machine)), None)
    if chosen is None:  # the least bad: the smallest larger shortfall, then the most on the GPU (the earliest)
        best = min(placed, key=lambda row: shortfall(row[2], row[3], machine))
        layers, moe = best[0], best[1]
    else:
        layers, moe = chosen
    gpu, cpu = place(facts, machine, settings, layers, moe)
    gpu_layers, cpu_moe = layers, moe
    per_token = sum(facts.kv_bytes_per_cell(layer, settings.kv_type) for layer in range(facts.n_layer))
    plan = Placement(
        facts,
        machine,
        settings,
        gpu_layers,
        cpu_moe,
        gpu,
        cpu,
        per_token,
        _ceiling(facts, machine, gpu_layers, cpu_moe),
        chosen is not None,
    )
    plan.reasons.extend(_reasons(plan))
    return plan


def _reasons(plan: Placement) -> list[str]:
    facts, machine = plan.model, plan.machine
    gib = lambda n: f"{n / GiB:.2f} GiB"  # noqa: E731
    lines = []
    if machine.vram:
        lines.append(f"GPU budget {gib(machine.vram - VRAM_MARGIN)} ({gib(machine.vram)} less a {gib(VRAM_MARGIN)} margin)")
        if plan.gpu_layers <= facts.n_layer:
            nxt = place(facts, machine, plan.settings, plan.gpu_layers + 1, plan.cpu_moe)[0].total
            lines.append(f"one more layer on the GPU would need {gib(nxt)}")
        elif plan.cpu_moe:
            nxt = place(facts, machine, plan.settings, plan.gpu_layers, plan.cpu_moe - 1)[0].total
            lines.append(f"one layer's experts fewer in RAM would need {gib(nxt)} of GPU memory")
    lines.append(f"RAM budget {gib(machine.ram - RAM_MARGIN)} ({gib(machine.ram)} less a {gib(RAM_MARGIN)} margin)")
    if not plan.fits:
        over_gpu = plan.gpu.total - max(machine.vram - VRAM_MARGIN, 0)
        over_ram = plan.cpu.total - (machine.ram - RAM_MARGIN)
        missing = [f"{what} by {gib(over)}" for what, over in (("the GPU", over_gpu), ("RAM", over_ram)) if over > 0]
        lines.append(
            f"does not fit: over {' and '.join(missing)} with the least bad split shown (the weights alone are "
            f"{gib(facts.weight_bytes)}); try a smaller quantization, a shorter --ctx, fewer --parallel, or --kv-type q8_0"
        )
    return lines
