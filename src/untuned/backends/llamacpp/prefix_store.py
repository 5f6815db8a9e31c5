"""Evaluated prompt prefixes kept on disk, so that a restart (or another untuned process) loads a URIAL
or many-shot prefix instead of evaluating it again.

A file holds one prefix's KV state as llama.cpp saves a sequence (``llama_state_seq_get_data``), named by
a hash of what makes the state what it is: the model file (its size and its first and last 4 MiB), the
load options that change the numbers (KV type, flash attention, a KV pool or streams, GPU layers, the
batch the prefix is evaluated in), llama.cpp's build and CPU features, and the prefix's tokens. The file
repeats all of that in its header, with the state's length and SHA-256; a file whose header, tokens,
length or checksum do not match, or that llama.cpp refuses, is deleted and the prefix evaluated anew:
nothing on disk is trusted unchecked. The folder is bounded: the least recently used files go first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from untuned.paths import cache_dir

log = logging.getLogger(__name__)
MAGIC = b"UNTUNED-PREFIX-1\n"
SUFFIX = ".kv"
MIN_TOKENS = 64  # shorter prefixes are evaluated faster than read


def default_folder() -> Path:
    """``prefixes/`` in untuned's cache folder (:func:`untuned.paths.cache_dir`)."""
    return cache_dir() / "prefixes"


def model_identity(path: Path) -> str:
    """A model file's identity: its size and the SHA-256 of its first and last 4 MiB (renames keep it). Read
    once per file version (its size and modification time): a load asks for it twice (the pinned plan, the
    prefix store)."""
    stat = path.stat()
    return _identity(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _identity(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(4 << 20))
        handle.seek(max(size - (4 << 20), 0))
        digest.update(handle.read(4 << 20))
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class StoredPrefix:
    """One file of the store, as ``untuned cache list`` shows it."""

    path: Path
    model: str
    tokens: int
    bytes: int
    last_used: float


class PrefixStore:
    """The folder of saved prefix states for one loaded model under one set of load options."""

    def __init__(self, folder: Path, *, model: Path, settings: dict, limit_bytes: int) -> None:
        self.folder, self.limit_bytes = folder, limit_bytes
        self.identity = {"model": model_identity(model), **settings}  # the content's, not the name: renames keep it
        self.model_name = model.name
        self._identity_digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()
        self.loads = self.saves = self.rejected = 0

    def _path(self, prefix: tuple[int, ...]) -> Path:
        digest = hashlib.sha256(f"{self._identity_digest}:{_tokens_digest(prefix)}".encode())
        return self.folder / f"{digest.hexdigest()[:40]}{SUFFIX}"

    def load(self, prefix: tuple[int, ...]) -> bytes | None:
        """The saved state of ``prefix`` if there is one and it passes every check; a file that fails one is
        deleted (None: evaluate the prefix)."""
        if len(prefix) < MIN_TOKENS:
            return None
        path = self._path(prefix)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        payload = self._checked(data, prefix)
        if payload is None:
            self.reject(prefix)
            return None
        os.utime(path)  # recently used
        return payload

    def reject(self, prefix: tuple[int, ...]) -> None:
        """Delete the file of ``prefix``: it failed a check here, or llama.cpp refused its state."""
        path = self._path(prefix)
        log.warning("the saved prefix %s failed its checks: deleted, evaluating the prefix again", path.name)
        self.rejected += 1
        path.unlink(missing_ok=True)

    def _checked(self, data: bytes, prefix: tuple[int, ...]) -> bytes | None:
        """The state in ``data`` if its header matches this model, options and prefix and its checksum holds."""
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            return None
        at = len(MAGIC)
        (length,) = struct.unpack_from("<I", data, at)
        try:
            header = json.loads(data[at + 4 : at + 4 + length])
        except ValueError:
            return None
        payload = data[at + 4 + length :]
        if not isinstance(header, dict) or header.get("identity") != self.identity:
            return None
        if header.get("tokens") != len(prefix) or header.get("prefix_sha256") != _tokens_digest(prefix):
            return None
        if header.get("bytes") != len(payload) or header.get("sha256") != hashlib.sha256(payload).hexdigest():
            return None
        return payload

    def save(self, prefix: tuple[int, ...], payload: bytes) -> None:
        """Write the state of ``prefix`` atomically, then evict beyond the size limit. A failure to write is
        logged, never raised: the cache is an optimisation."""
        if len(prefix) < MIN_TOKENS or self.limit_bytes <= 0:
            return
        header = json.dumps(
            {
                "identity": self.identity,
                "model_name": self.model_name,  # for `untuned cache list` only: not part of the identity
                "tokens": len(prefix),
                "prefix_sha256": _tokens_digest(prefix),
                "bytes": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
                "saved": time.time(),
            },
            sort_keys=True,
        ).encode()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".part", delete=False) as handle:
                handle.write(MAGIC + struct.pack("<I", len(header)) + header + payload)
            os.replace(handle.name, self._path(prefix))
            self.saves += 1
            evict(self.folder, self.limit_bytes)
        except OSError as exc:
            log.warning("could not save an evaluated prefix to %s: %s", self.folder, exc)


def _tokens_digest(prefix: tuple[int, ...]) -> str:
    return hashlib.sha256(struct.pack(f"<{len(prefix)}i", *prefix)).hexdigest()


def stored(folder: Path | None = None) -> list[StoredPrefix]:
    """Every saved prefix in ``folder`` (default: :func:`default_folder`), most recently used first."""
    folder = folder or default_folder()
    found = []
    for path in folder.glob(f"*{SUFFIX}") if folder.is_dir() else ():
        try:
            stat = path.stat()
            with path.open("rb") as handle:
                head = handle.read(len(MAGIC) + 4)
                length = struct.unpack_from("<I", head, len(MAGIC))[0] if head.startswith(MAGIC) else 0
                header = json.loads(handle.read(length)) if length else {}
        except OSError:  # gone meanwhile
            continue
        except (ValueError, struct.error):  # listed as unreadable; a load rejects it
            header = {}
        header = header if isinstance(header, dict) else {}
        model = str(header.get("model_name", "?"))
        found.append(StoredPrefix(path, model, int(header.get("tokens", 0) or 0), stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda s: -s.last_used)


PLANS = "plans.json"  # beside the prefixes: the placement each model's first load chose, by content identity


def pinned_plan(folder: Path, key: str) -> tuple[int, int] | None:
    """The (gpu_layers, cpu_moe) recorded for ``key`` (a model's identity and its load options), if any."""
    try:
        found = json.loads((folder / PLANS).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(found, list) and len(found) == 2 and all(isinstance(n, int) for n in found):
        return found[0], found[1]
    return None


def pin_plan(folder: Path, key: str, placement: tuple[int, int]) -> None:
    """Record ``placement`` for ``key`` (atomically; a failure is logged, never raised)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            table = json.loads((folder / PLANS).read_text())
            table = table if isinstance(table, dict) else {}
        except (OSError, ValueError):
            table = {}
        table[key] = list(placement)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".part", delete=False) as handle:
            json.dump(table, handle, sort_keys=True)
        os.replace(handle.name, folder / PLANS)
    except OSError as exc:
        log.warning("could not record the plan in %s: %s", folder, exc)


def evict(folder: Path, limit_bytes: int) -> list[Path]:
    """Delete the least recently used files until the folder holds at most ``limit_bytes``; the deleted paths.
    Sizes and times only (after every save): no file is opened."""
    files = []
    for path in folder.glob(f"*{SUFFIX}"):
        try:
            stat = path.stat()
        except OSError:  # gone meanwhile (another process evicting)
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    files.sort()
    total, deleted = sum(size for _, size, _ in files), []
    for _, size, path in files:
        if total <= limit_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    for stale in folder.glob("*.part"):  # a save that died midway
        if time.time() - stale.stat().st_mtime > 3600:
            stale.unlink(missing_ok=True)
    return deleted


def clear(folder: Path | None = None) -> int:
    """Delete every saved prefix; how many there were."""
    entries = stored(folder)
    for entry in entries:
        entry.path.unlink(missing_ok=True)
    return len(entries)
