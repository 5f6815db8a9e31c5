"""The backend registry: built-in backends and those of installed plugins (entry-point group
``untuned.backends``, value ``module:factory``); a model spec (:mod:`untuned.spec`) loaded by the backend it
implies or names. Heavy dependencies are imported only when a backend is loaded."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from untuned.backends.protocol import Backend, LoadOptions
from untuned.errors import UntunedError
from untuned.spec import BUILTIN_BACKENDS, ModelSpec, plugin_backend_names

BackendFactory = Callable[[ModelSpec, LoadOptions], Backend]

_BUILTIN = {
    "llama.cpp": "untuned.backends.llamacpp.backend:LlamaCppBackend.from_spec",
    "transformers": "untuned.backends.hf.backend:TransformersBackend.from_spec",
    "remote": "untuned.backends.remote:RemoteBackend.from_spec",
}
assert tuple(_BUILTIN) == BUILTIN_BACKENDS


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
        from untuned import hub

        if hub.has_gguf(model.location):  # a repository of GGUF files: llama.cpp loads its default quantisation
            model = ModelSpec("hub-gguf", f"{model.location}:{hub.DEFAULT_QUANT}")
    name = options.backend or model.default_backend
    if model.kind == "remote" and name != "remote":
        raise UntunedError(f"{model.location} is a server URL: use the 'remote' backend, not {name!r}.")
    return backend_factory(name)(model, options)
