"""What every command shares: the consoles, the one place that turns errors into a message and exit
code 2, the progress bar, and the model, prompt and sampling options, declared once.

A command asks for shared options with :func:`model_options`; it receives one :class:`ModelOptions`
instead of a dozen parameters. Every default comes from the library's own records
(:class:`~untuned.backends.Sampling`, :class:`~untuned.backends.LoadOptions`), so it changes in one
place. This module imports no other CLI module.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, TypeVar, get_type_hints

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from untuned.assistant import Assistant
from untuned.backends import Backend, LoadOptions, ModelSpec, Sampling, load_backend
from untuned.errors import UntunedError
from untuned.pipeline.run_plan import RunPlan
from untuned.prompt import PromptSet, load_prompt
from untuned.supervised import supervise

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(command: F) -> F:
    """Show library errors and invalid settings as one line on stderr, and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UntunedError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            err.print(f"[bold red]error:[/] invalid setting: {problems}", markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def progress() -> Progress:
    """The progress bar of long commands, on stderr: description, bar, n/total, a note, elapsed, ETA."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=err)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")


def ids_option(text: str | None) -> list[str] | None:
    """The ids of a comma-separated ``--ids`` option."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


# every LoadOptions field is a shared command-line option but these, each set another way
NOT_OPTIONS = {
    "batch_invariant": "a run's --fast-batching sets it",
    "concurrency": "a command's own --concurrency",
    "timeout": "a remote backend's default",
    "max_retries": "a remote backend's default",
}
LOAD_FIELDS = tuple(name for name in LoadOptions.model_fields if name not in NOT_OPTIONS)
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "seed")


@dataclass
class ModelOptions:
    """The model to load, how, the URIAL prompt set and the sampling settings of a command. The load and
    sampling settings are kept by name as the command line gave them (``load``, ``sampling_values``) and become
    the library's records, which declare them (:class:`LoadOptions`, :class:`Sampling`): no field is copied here."""

    model: str = "default"
    prompt: str = "helpful"
    stop: list[str] = field(default_factory=list)
    verbose: bool = False
    load: dict[str, Any] = field(default_factory=dict)
    sampling_values: dict[str, Any] = field(default_factory=dict)
    supervised: bool = field(default=False, init=False)  # local models in a supervised process of their own (serve)
    opened: list[Backend] = field(default_factory=list, init=False, repr=False)  # closed when the command ends

    @classmethod
    def of(cls, **values: Any) -> ModelOptions:
        """From the command's option values by name: LoadOptions' and Sampling's fields to their records."""
        load, sampling = dict(values.pop("load", None) or {}), dict(values.pop("sampling_values", None) or {})
        own = {f.name for f in fields(cls)}  # stop: a list here, Sampling's tuple when made
        load |= {k: values.pop(k) for k in list(values) if k in LoadOptions.model_fields and k not in own}
        sampling |= {k: values.pop(k) for k in list(values) if k in Sampling.model_fields and k not in own}
        return cls(**values, load=load, sampling_values=sampling)

    @staticmethod
    def default(name: str) -> Any:
        """An option's default: the library record's declaration, or this record's own field."""
        own = {f.name: f for f in fields(ModelOptions)}
        if name in own:
            return own[name].default_factory() if callable(own[name].default_factory) else own[name].default
        return (LoadOptions.model_fields.get(name) or Sampling.model_fields[name]).default

    def sampling(self) -> Sampling:
        return Sampling(**self.sampling_values, stop=tuple(self.stop))

    def load_options(self) -> LoadOptions:
        return LoadOptions(**self.load)

    def run_plan(self, **fields: Any) -> RunPlan:
        """The model, its load options and its sampling as one plan (the pipeline's record)."""
        return RunPlan(model=self.model, loading=self.load_options(), sampling=self.sampling(), **fields)

    def prompt_set(self) -> PromptSet:
        return load_prompt(self.prompt)

    def load_model(self, spec: str | None = None) -> Backend:
        """Load ``spec`` (default: ``--model``) with these options, showing a spinner meanwhile."""
        spec = spec or self.model
        with err.status(f"loading {spec} …"):
            if self.supervised and ModelSpec.parse(spec).default_backend != "remote":
                backend: Backend = supervise(spec, self.load_options())
            else:
                backend = load_backend(spec, self.load_options())
        self.opened.append(backend)
        return backend

    def close(self) -> None:
        """Close every model this command loaded (the engines stop before the interpreter does)."""
        while self.opened:
            self.opened.pop().close()

    def assistant(self, *, chat_template: bool = False) -> Assistant:
        """Logging, settings and the prompt set checked first (no model loads for a typo), then the model; the
        prompt set checked to fit its window unless the model answers in its own chat template."""
        setup_logging(self.verbose)
        sampling, prompt_set, _ = self.sampling(), self.prompt_set(), self.load_options()
        return Assistant(self.load_model(), prompt_set, sampling, check_fits=not chat_template)


def record_option(record: type[BaseModel], name: str, *flags: str, **extra: Any) -> tuple[Any, Any]:
    """(type, typer option) of one field of ``record``: ``--name``, the field's description as help, its
    bounds as min and max (``extra``: short flags' company, envvar, a different help)."""
    info = record.model_fields[name]
    bounds = {}
    for rule in info.metadata:
        for attribute, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(rule, attribute, None) is not None:
                bounds[key] = getattr(rule, attribute)
    option = typer.Option(f"--{name.replace('_', '-')}", *flags, **{"help": info.description, **bounds, **extra})
    return info.annotation, option


# Each shared option once: (type, typer option). Defaults are ModelOptions' (the library's).
_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (
        str,
        typer.Option(
            "--model",
            "-m",
            envvar="UNTUNED_MODEL",
            help="'default' (bundled gemma-3-270m base), "
            "a .gguf path, hf:org/name, a model folder, http(s)://host/v1, or PLUGIN:ARGUMENT.",
        ),
    ),
    **{name: record_option(LoadOptions, name) for name in LOAD_FIELDS},
    "prompt": (str, typer.Option("--prompt", "-p", help="Bundled prompt set name or a .urial file.")),
    **{name: record_option(Sampling, name) for name in SAMPLING_FIELDS},
    "stop": (list[str] | None, typer.Option("--stop", help="Extra stop string (repeatable).")),
    "verbose": (bool, typer.Option("--verbose", "-v", help="Log what the backend does (on stderr).")),
}
# the short flags and environment variables some options have besides
_OPTIONS["backend"] = record_option(LoadOptions, "backend", "-b")
_OPTIONS["n_ctx"] = record_option(LoadOptions, "n_ctx", envvar="UNTUNED_N_CTX")
_OPTIONS["temperature"] = record_option(Sampling, "temperature", "-t")
_OPTIONS["max_tokens"] = record_option(Sampling, "max_tokens", "-n")
_OPTIONS["prefix_cache"] = (
    bool,
    typer.Option("--prefix-cache/--no-prefix-cache", help=LoadOptions.model_fields["prefix_cache"].description),
)
_OPTIONS["backend_options"] = (
    list[str] | None,
    typer.Option("--backend-option", help=LoadOptions.model_fields["backend_options"].description, metavar="NAME=VALUE"),
)
for _name in ("gpu_layers", "cpu_moe"):  # a number or "auto": read as text, checked by LoadOptions
    _OPTIONS[_name] = (str, typer.Option(f"--{_name.replace('_', '-')}", help=LoadOptions.model_fields[_name].description))
LOADING = ("model", *(name for name in LOAD_FIELDS if name != "parallel"))  # parallel: a command's own option
SAMPLING = ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "seed", "stop")
ALL = (*LOADING, "prompt", *SAMPLING, "verbose")


def option_group(
    record: type,
    table: dict[str, tuple[Any, Any]],
    *names: str,
    into: str = "options",
    make: Callable[..., Any] | None = None,
    default_of: Callable[[str], Any] | None = None,
    **defaults: Any,
) -> Callable[[F], F]:
    """Give a command the options ``names`` of ``table`` (default: all); it receives them as one
    argument ``into``, an instance of the dataclass ``record`` (whose defaults are the options'), made by
    ``make`` (default: the record itself) from the values by name; ``default_of`` gives the default of an option
    that is not a field of the record. ``defaults`` overrides a default for this command. A list option left
    out becomes an empty list."""
    chosen = names or tuple(table)
    base = {f.name: (f.default_factory() if callable(f.default_factory) else f.default) for f in fields(record) if f.init}
    base |= {name: default_of(name) for name in chosen if name not in base} if default_of else {}
    make = make or record
    listed = {name for name, (kind, _) in table.items() if "list" in str(kind)}

    def decorate(command: F) -> F:
        signature = inspect.signature(command)
        hints = get_type_hints(command, include_extras=True)  # the command's own options, resolved
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
        own = [p for p in own if p.name != into]
        added = []
        for name in chosen:
            kind, option = table[name]
            default = defaults.get(name, base[name])
            added.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[kind, option],
                    default=None if name in listed else default,
                )
            )

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in chosen if name in kwargs}
            for name in listed & set(values):
                if values[name] is None:
                    values[name] = []
            options = make(**{**base, **{k: v for k, v in defaults.items() if k in base}, **values})
            try:
                return command(*args, **{into: options}, **kwargs)
            finally:
                if hasattr(options, "close"):  # what the command loaded through its options
                    options.close()

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def model_options(*names: str, **defaults: Any) -> Callable[[F], F]:
    """Give a command the shared model options ``names`` (default: all but ``parallel``); it receives
    them as one ``options: ModelOptions`` argument. ``defaults`` overrides a default for this command."""
    return option_group(
        ModelOptions, _OPTIONS, *(names or ALL), make=ModelOptions.of, default_of=ModelOptions.default, **defaults
    )
