"""GGUF files on the Hugging Face Hub, named by model specs and fetched into huggingface_hub's own cache.

    hf:org/repo:Q4_K_M          the repository's file of that quantisation (all parts of a split file)
    hf:org/repo/dir/file.gguf   that file
    hf:org/repo                 a repository of GGUF files: its Q4_K_M file; any other repository
                                stays a transformers model

Downloads show a progress bar and land in the normal cache, so ``HF_HUB_OFFLINE=1`` and a cached
file work without network; with neither network nor cache the error says in one line what to do.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from untuned.errors import ModelNotFoundError

log = logging.getLogger(__name__)
DEFAULT_QUANT = "Q4_K_M"
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class HubGguf:
    """A GGUF file (or split file) in a Hub repository, by quantisation name or by path."""

    repo: str
    quant: str | None = None
    filename: str | None = None

    @property
    def spec(self) -> str:
        return f"hf:{self.repo}" + (f":{self.quant}" if self.quant else f"/{self.filename}" if self.filename else "")


def parse(location: str) -> HubGguf | None:
    """The GGUF a ``hf:`` spec names, or None when it names a repository alone (``org/repo``)."""
    base, colon, quant = location.partition(":")
    parts = base.split("/")
    if colon:
        if len(parts) != 2 or not quant:
            raise ModelNotFoundError(f"hf:{location}: write hf:org/repo:QUANT (for example hf:{parts[0]}/name:Q4_K_M)")
        return HubGguf(repo=base, quant=quant)
    if len(parts) > 2 and base.lower().endswith(".gguf"):
        return HubGguf(repo="/".join(parts[:2]), filename="/".join(parts[2:]))
    return None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_root(cache_dir: Path | None = None) -> Path:
    """huggingface_hub's cache folder, as the environment names it now (HF_HUB_CACHE, HF_HOME)."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def _cached_files(repo: str, cache_dir: Path | None) -> list[str] | None:
    """The files of the repository's most recent cached snapshot, or None when nothing is cached."""
    root = cache_root(cache_dir) / f"models--{repo.replace('/', '--')}"
    snapshots = sorted((root / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if root.exists() else []
    if not snapshots:
        return None
    snapshot = snapshots[-1]
    return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file() or p.is_symlink())


def repo_files(repo: str, *, cache_dir: Path | None = None) -> list[str] | None:
    """The repository's files: from the Hub, or from the cache when offline or unreachable (None: unknown)."""
    if not offline():
        try:
            from huggingface_hub import HfApi

            return sorted(HfApi().list_repo_files(repo))
        except Exception as exc:  # no network, unknown repository, gated: fall back to what is cached
            log.info("could not list %s on the Hub (%s); looking in the cache", repo, exc)
    return _cached_files(repo, cache_dir)


def quant_of(filename: str) -> str | None:
    """The quantisation name in a GGUF file name (``...-Q4_K_M.gguf`` -> ``Q4_K_M``)."""
    stem = _SPLIT.sub(".gguf", Path(filename).name)[: -len(".gguf")]
    match = re.search(r"(?:^|[-._])((?:IQ|Q)\d[A-Z0-9_]*|F16|BF16|F32)$", stem, re.IGNORECASE)
    return match.group(1).upper() if match else None


def choose(files: list[str], gguf: HubGguf) -> list[str]:
    """The file (all parts of a split file, in order) that ``gguf`` names among ``files``."""
    ggufs = [f for f in files if f.lower().endswith(".gguf")]
    if gguf.filename:
        first = _SPLIT.search(gguf.filename)
        wanted = [gguf.filename] if first is None else _parts(ggufs, gguf.filename)
        missing = [f for f in wanted if f not in ggufs]
        if missing:
            raise ModelNotFoundError(f"{gguf.spec}: {missing[0]} is not in {gguf.repo}; its GGUF files: {_listing(ggufs)}")
        return wanted
    quant = (gguf.quant or DEFAULT_QUANT).upper()
    matches = [f for f in ggufs if quant_of(f) == quant]
    firsts = sorted({_first_part(f) for f in matches})
    if not firsts:
        available = sorted({q for q in (quant_of(f) for f in ggufs) if q})
        raise ModelNotFoundError(
            f"{gguf.spec}: no {quant} GGUF in {gguf.repo}; quantisations there: "
            f"{', '.join(available) or 'none'} (name one: hf:{gguf.repo}:QUANT)"
        )
    if len(firsts) > 1:
        raise ModelNotFoundError(
            f"{gguf.spec}: several {quant} files in {gguf.repo} ({_listing(firsts)}); name one: hf:{gguf.repo}/FILE.gguf"
        )
    return _parts(ggufs, firsts[0]) if _SPLIT.search(firsts[0]) else firsts


def _first_part(filename: str) -> str:
    match = _SPLIT.search(filename)
    return filename if match is None else _SPLIT.sub(f"-00001-of-{match.group(2)}.gguf", filename)


def _parts(files: list[str], first: str) -> list[str]:
    total = int(_SPLIT.search(first).group(2))
    return [_SPLIT.sub(f"-{index:05d}-of-{total:05d}.gguf", first) for index in range(1, total + 1)]


def _listing(files: list[str]) -> str:
    return ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "") if files else "none"


def has_gguf(repo: str, *, cache_dir: Path | None = None) -> bool:
    """Whether a repository named alone (``hf:org/repo``) holds GGUF files (so llama.cpp should load it)."""
    files = repo_files(repo, cache_dir=cache_dir)
    return bool(files) and any(f.lower().endswith(".gguf") for f in files)


def fetch(gguf: HubGguf, *, cache_dir: Path | None = None) -> Path:
    """The local path of the (first part of the) GGUF file, downloaded into the Hub cache if needed."""
    from huggingface_hub import hf_hub_download

    files = repo_files(gguf.repo, cache_dir=cache_dir)
    if files is None:
        raise ModelNotFoundError(_nowhere(gguf))
    try:
        wanted = choose(files, gguf)
    except ModelNotFoundError as exc:
        if offline():  # the listing is only what the cache holds
            raise ModelNotFoundError(f"{_nowhere(gguf)}; the cache holds: {_listing(files)}") from exc
        raise
    cached = cached_paths(gguf.repo, wanted, cache_dir=cache_dir)
    if cached is not None:
        return cached[0]
    if not offline():
        check_space(gguf.repo, wanted, cache_root(cache_dir))
    paths = []
    for filename in wanted:  # huggingface_hub resumes a part left half-downloaded (its .incomplete file)
        try:
            local = hf_hub_download(gguf.repo, filename, cache_dir=cache_root(cache_dir), local_files_only=offline())
            paths.append(Path(local))
        except Exception as exc:  # offline and not cached, network down mid-way, gated repository
            raise ModelNotFoundError(f"{_nowhere(gguf)} ({type(exc).__name__})") from exc
    return paths[0]


def cached_paths(repo: str, filenames: list[str], *, cache_dir: Path | None = None) -> list[Path] | None:
    """The local paths of ``filenames`` when the cache holds every one, else None (nothing downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(repo, name, cache_dir=cache_root(cache_dir)) for name in filenames]
    return [Path(f) for f in found] if all(isinstance(f, str) for f in found) else None


def file_sizes(repo: str, filenames: list[str]) -> dict[str, int]:
    """The sizes in bytes of ``filenames`` in ``repo`` as the Hub lists them (network)."""
    from huggingface_hub import HfApi

    return {info.path: int(info.size or 0) for info in HfApi().get_paths_info(repo, filenames)}


def check_space(repo: str, filenames: list[str], folder: Path, *, sizes: dict[str, int] | None = None) -> None:
    """Refuse, before any byte is downloaded, a download the disk holding ``folder`` has no room for (the
    parts already partly downloaded count for what they hold)."""
    import shutil

    try:
        sizes = sizes if sizes is not None else file_sizes(repo, filenames)
    except Exception as exc:  # the listing failed: the download itself will say why
        log.info("could not read the file sizes of %s (%s)", repo, exc)
        return
    folder.mkdir(parents=True, exist_ok=True)
    partial = sum(p.stat().st_size for p in folder.glob(f"models--{repo.replace('/', '--')}/blobs/*.incomplete"))
    need, free = sum(sizes.values()) - partial, shutil.disk_usage(folder).free
    if need > free:
        raise ModelNotFoundError(
            f"{repo}: {', '.join(filenames)} needs {need / 1e9:.2f} GB and {folder} has {free / 1e9:.2f} GB free: "
            "free some space, or point HF_HUB_CACHE at a larger disk"
        )


def remote_reader(repo: str, filename: str, *, timeout: float = 60.0):
    """(read(offset, size), [file size]) for a file on the Hub, read by HTTP byte ranges (a GGUF's header
    without its weights)."""
    from huggingface_hub import get_token, hf_hub_url

    token = get_token()
    return range_reader(
        hf_hub_url(repo, filename), headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=timeout
    )


def range_reader(url: str, *, headers: dict[str, str] | None = None, timeout: float = 60.0):
    """(read(offset, size), [file size once known]) for the file at ``url``, read by HTTP byte ranges."""
    import httpx

    client = httpx.Client(follow_redirects=True, timeout=timeout, headers=headers or {})
    size: list[int] = []

    def read(offset: int, length: int) -> bytes:
        response = client.get(url, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        if response.status_code == 416:  # the range starts past the end
            return b""
        if response.status_code != 206:
            raise ModelNotFoundError(f"{url}: the server answered {response.status_code} to a byte-range read")
        total = response.headers.get("content-range", "").rpartition("/")[2]
        if total.isdigit() and not size:
            size.append(int(total))
        return response.content

    return read, size


def _nowhere(gguf: HubGguf) -> str:
    how = "HF_HUB_OFFLINE is set" if offline() else "the Hub cannot be reached"
    return (
        f"{gguf.spec} is not in the Hugging Face cache and {how}: download it where there is network "
        f"(huggingface-cli download {gguf.repo} --include '*{gguf.quant or gguf.filename or DEFAULT_QUANT}*') "
        "and copy the cache over, or pass the .gguf file's path"
    )
