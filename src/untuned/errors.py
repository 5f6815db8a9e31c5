"""Errors raised by untuned. Every message says what went wrong and what to do next.

The CLI turns any :class:`UntunedError` into a one-line message and exit code 2, in one place
(``untuned.cli``); library users catch the specific subclasses.
"""

from __future__ import annotations


class UntunedError(Exception):
    """Base class of every error untuned raises on purpose."""


class InvalidInput(UntunedError, ValueError):
    """A value the caller gave is out of range or of the wrong kind (a token id outside the vocabulary, a
    conversation out of order, a score off the scale); the message names it and what would be accepted.
    A ValueError too, so code that caught ValueError before still catches it."""


class PromptFileError(UntunedError):
    """A prompt file is malformed; the message names the file and the line."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source}, line {line}: {problem}")


class UnknownPromptError(UntunedError):
    """A prompt name is neither a bundled prompt set nor an existing file."""


class ModelNotFoundError(UntunedError):
    """A model file, folder or hub id could not be found."""


class ModelLoadError(UntunedError):
    """A model was found but could not be loaded (corrupt or unsupported file)."""


class BackendUnavailableError(UntunedError):
    """A backend needs an optional dependency that is not installed."""


class ContextOverflowError(UntunedError):
    """The prompt does not fit in the model's context window."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        self.excess = prompt_tokens - context_length + 1
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the context window is {context_length}: "
            f"{self.excess} tokens too many (leaving room for at least one new token). "
            "Use a shorter prompt set (e.g. --prompt one-shot), a shorter conversation (/reset), "
            "or a larger context (--n-ctx) if the model supports it."
        )


class PromptTooLongError(UntunedError):
    """A prompt set whose examples and answer budget do not fit the model's window, refused at load."""

    def __init__(self, name: str, prefix_tokens: int, max_tokens: int, context_length: int) -> None:
        self.prefix_tokens, self.max_tokens, self.context_length = prefix_tokens, max_tokens, context_length
        total = prefix_tokens + max_tokens
        super().__init__(
            f"the prompt set {name!r} is {prefix_tokens} tokens; with max_tokens {max_tokens} that is {total}, "
            f"{total - context_length} more than the model's window of {context_length} tokens (and every question "
            "adds more). Use fewer or shorter examples, a smaller --max-tokens, or a larger --n-ctx if the model "
            "supports it."
        )


class RemoteError(UntunedError):
    """An OpenAI-compatible server could not be reached or answered with an error."""


class UnsupportedOperation(UntunedError):
    """The backend cannot do what was asked (for example, tokenizing on a server without /tokenize)."""


class DataFileError(UntunedError):
    """An input or output file is malformed; the message names the file and line."""

    def __init__(self, source: object, line: int, problem: str) -> None:
        self.source, self.line, self.problem = str(source), line, problem
        super().__init__(f"{source}, line {line}: {problem}")


class RunSettingsMismatch(UntunedError):
    """An output file (or folder) holds a run made with other settings."""


class JudgeUnavailable(RemoteError):
    """The judge could not be reached or kept failing after its retries."""


class ReplyError(UntunedError):
    """A judge's reply could not be read as the template's JSON."""


class ModelClosedError(UntunedError):
    """The model was closed while a request was waiting or running."""


class ModelFailure(UntunedError):
    """The model failed while answering one request (a fault of the server's side: HTTP 500). The
    engine ends only the request that failed; the others go on."""


class ChatTemplateError(UntunedError):
    """A model's chat template is missing, or failed on the given messages."""


class EngineRestarted(UntunedError):
    """The engine's process ended (a native crash) while the request ran; the server restarted it (HTTP 503)."""


class EngineUnavailable(UntunedError):
    """The engine's process is restarting, or could not be started again (HTTP 503)."""


class ConstraintError(UntunedError, ValueError):
    """A request's output constraint (a JSON schema, a grammar, tool calls) cannot be enforced, or the output
    reached a point where no token can follow; the request ends (HTTP 400), the engine goes on."""


class CrashLoopRefused(UntunedError):
    """A request that ended the engine before, or a client whose requests keep ending it, is not run again
    (HTTP 400 / 429)."""

    def __init__(self, message: str, *, status: int, retry_after: int = 0) -> None:
        self.status, self.retry_after = status, retry_after
        super().__init__(message)
