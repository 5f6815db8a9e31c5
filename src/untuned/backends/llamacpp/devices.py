"""What llama-cpp-python leaves unbound, bound here through ctypes from the ggml library it ships: the
compute devices with their free memory (for ``--gpu-layers auto``), and tensor buffer-type overrides
(llama.cpp's ``-ot``), which keep a MoE model's expert weights in RAM while its layers run on the GPU.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from untuned.backends.llamacpp.native import import_llama_cpp

DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}  # enum ggml_backend_dev_type


@dataclass(frozen=True)
class Device:
    name: str
    kind: str
    free: int
    total: int


class _Override(ctypes.Structure):
    """struct llama_model_tensor_buft_override: a regular expression over tensor names, a buffer type."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _ggml() -> ctypes.CDLL:
    lib = import_llama_cpp()
    folder = Path(lib.__file__).parent / "lib"
    found = next((p for p in sorted(folder.glob("libggml.*")) if p.suffix in (".so", ".dylib", ".dll") or ".so." in p.name), None)
    ggml = ctypes.CDLL(str(found) if found else "libggml.so")
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_name.restype = ctypes.c_char_p
    ggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_type.restype = ctypes.c_int
    ggml.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    ggml.ggml_backend_dev_memory.restype = None
    ggml.ggml_backend_cpu_buffer_type.restype = ctypes.c_void_p
    return ggml


def devices() -> list[Device]:
    """Every compute device llama.cpp sees, with its free and total memory as it reports them."""
    lib = import_llama_cpp()
    lib.llama_backend_init()
    ggml = _ggml()
    found = []
    for index in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        kind = DEVICE_TYPES.get(ggml.ggml_backend_dev_type(device), "other")
        found.append(Device(ggml.ggml_backend_dev_name(device).decode(), kind, free.value, total.value))
    return found


def gpu_free_memory() -> int:
    """Free memory of the first GPU llama.cpp sees (0 on a CPU-only build)."""
    return next((d.free for d in devices() if d.kind == "gpu"), 0)


def experts_in_ram(layers: int) -> str | None:
    """The pattern of the expert weights of the first ``layers`` layers (llama.cpp's ``--n-cpu-moe``);
    -1: of every layer (``-ot exps=CPU``); None for 0."""
    if layers == 0:
        return None
    if layers < 0:
        return r"\.ffn_(?:up|down|gate|gate_up)_(?:ch)?exps"
    numbers = "|".join(str(i) for i in range(layers))
    return rf"^blk\.(?:{numbers})\.ffn_(?:up|down|gate|gate_up)_(?:ch)?exps"


class CpuOverrides:
    """A NULL-terminated array of overrides placing the tensors ``pattern`` matches in the CPU's buffer type,
    kept alive as long as the model that was loaded with it."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern.encode()
        buft = _ggml().ggml_backend_cpu_buffer_type()
        self.array = (_Override * 2)(_Override(self.pattern, buft), _Override(None, None))

    @property
    def pointer(self) -> int:
        return ctypes.cast(self.array, ctypes.c_void_p).value or 0
