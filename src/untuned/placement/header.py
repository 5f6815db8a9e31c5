"""A GGUF file's header: its metadata and its tensor table, read without touching the weights.

The format's constants (value types, each quantization type's block size and bytes) come from the
``gguf`` package. Its own reader maps the whole file and decodes every vocabulary entry (14 s for
gemma-3's 262,144 tokens here, and it cannot read a file cut short); this one reads the header
sequentially from any source of bytes, skips arrays it has no use for, and so works from a local file
or from the first megabytes of a file on the Hugging Face Hub fetched by byte range.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from untuned.errors import ModelLoadError

_SCALARS = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}
KEPT_ARRAY = 64  # arrays up to this many items are kept in the metadata; longer ones only counted
Reader = Callable[[int, int], bytes]  # (offset, size) -> bytes


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the table: its name, shape (ggml order, innermost first), type and size in the file."""

    name: str
    shape: tuple[int, ...]
    type: str

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[self.type]]
        return self.elements // block * size


@dataclass(frozen=True)
class GgufHeader:
    """The metadata (arrays longer than KEPT_ARRAY as their length) and the tensor table of a GGUF file."""

    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_bytes: int | None = None

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def value(self, key: str, default: Any = None) -> Any:
        """``{arch}.key`` of this file's architecture (or a full key), ``default`` where it is absent."""
        return self.metadata.get(f"{self.architecture}.{key}", self.metadata.get(key, default))


class _Cursor:
    def __init__(self, read: Reader) -> None:
        self.read, self.at = read, 0

    def take(self, size: int) -> bytes:
        data = self.read(self.at, size)
        if len(data) < size:
            raise ModelLoadError(f"the GGUF header ends early (at byte {self.at + len(data)}): the file is truncated")
        self.at += size
        return data

    def scalar(self, kind: gguf.GGUFValueType) -> Any:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.scalar(gguf.GGUFValueType.UINT64)).decode("utf-8", "replace")

    def value(self, kind: gguf.GGUFValueType) -> Any:
        if kind == gguf.GGUFValueType.STRING:
            return self.string()
        if kind != gguf.GGUFValueType.ARRAY:
            return self.scalar(kind)
        item = gguf.GGUFValueType(self.scalar(gguf.GGUFValueType.UINT32))
        count = self.scalar(gguf.GGUFValueType.UINT64)
        if count <= KEPT_ARRAY:
            return [self.value(item) for _ in range(count)]
        if item == gguf.GGUFValueType.STRING:
            for _ in range(count):
                length = self.scalar(gguf.GGUFValueType.UINT64)  # read before self.at is taken
                self.at += length
        elif item in _SCALARS:
            self.at += count * struct.calcsize(_SCALARS[item])
        else:
            for _ in range(count):
                self.value(item)
        return ArrayLength(count)


class ArrayLength(int):
    """A long array of the metadata, kept as its length (a vocabulary: its size)."""


def read_header(read: Reader, *, file_bytes: int | None = None) -> GgufHeader:
    """The header of the GGUF file whose bytes ``read(offset, size)`` returns."""
    cursor = _Cursor(read)
    if cursor.take(4) != b"GGUF":
        raise ModelLoadError("not a GGUF file (it does not start with the GGUF signature)")
    version = cursor.scalar(gguf.GGUFValueType.UINT32)
    if version not in (2, 3):
        raise ModelLoadError(f"GGUF version {version} is not one this reader knows (2, 3)")
    tensor_count = cursor.scalar(gguf.GGUFValueType.UINT64)
    kv_count = cursor.scalar(gguf.GGUFValueType.UINT64)
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(gguf.GGUFValueType(cursor.scalar(gguf.GGUFValueType.UINT32)))
    tensors = []
    for _ in range(tensor_count):
        name = cursor.string()
        dims = cursor.scalar(gguf.GGUFValueType.UINT32)
        shape = tuple(cursor.scalar(gguf.GGUFValueType.UINT64) for _ in range(dims))
        kind = gguf.GGMLQuantizationType(cursor.scalar(gguf.GGUFValueType.UINT32))
        cursor.scalar(gguf.GGUFValueType.UINT64)  # the tensor's offset in the data section
        tensors.append(TensorInfo(name, shape, kind.name))
    alignment = int(metadata.get("general.alignment", 32))
    return GgufHeader(metadata, tuple(tensors), -(-cursor.at // alignment) * alignment, file_bytes)


def read_file_header(path: str | Path) -> GgufHeader:
    """The header of a local GGUF file (its first megabytes read, the weights never)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    with path.open("rb") as handle:

        def read(offset: int, size: int) -> bytes:
            handle.seek(offset)
            return handle.read(size)

        return read_header(buffered(read), file_bytes=path.stat().st_size)


def buffered(read: Reader, chunk: int = 1 << 20) -> Reader:
    """``read`` in whole chunks of ``chunk`` bytes, each fetched once (a remote file: one range request each)."""
    chunks: dict[int, bytes] = {}

    def buffered(offset: int, size: int) -> bytes:
        parts = []
        for index in range(offset // chunk, (offset + size - 1) // chunk + 1 if size else offset // chunk):
            if index not in chunks:
                chunks[index] = read(index * chunk, chunk)
            parts.append(chunks[index])
        data = b"".join(parts)
        start = offset - (offset // chunk) * chunk
        return data[start : start + size]

    return buffered
