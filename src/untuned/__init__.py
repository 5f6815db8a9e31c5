"""untuned: chat with untuned base LLMs through URIAL in-context alignment.

Public API::

    from untuned import Assistant, Sampling, load_prompt
    bot = Assistant.load("default", prompt="helpful")
    for chunk in bot.ask("What is the capital of France?"):
        print(chunk, end="")
"""

from untuned.assistant import Assistant, Chat, Completion
from untuned.backends import Backend, LoadOptions, ModelSpec, Sampling, StreamChunk, TokenScores, backend_names, load_backend
from untuned.conversation import Conversation, RenderedPrompt, UrialFormat, neutralise
from untuned.errors import (
    ContextOverflowError,
    ModelLoadError,
    ModelNotFoundError,
    PromptFileError,
    UnknownPromptError,
    UntunedError,
)
from untuned.pool import Pool  # registers pool:NAME prompt sets
from untuned.prompt import Example, PromptSet, builtin_prompt_names, load_prompt, parse_prompt

__version__ = "0.1.0"

__all__ = [
    "Pool",
    "Assistant",
    "Backend",
    "Chat",
    "Completion",
    "ContextOverflowError",
    "Conversation",
    "Example",
    "LoadOptions",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelSpec",
    "StreamChunk",
    "PromptFileError",
    "PromptSet",
    "RenderedPrompt",
    "Sampling",
    "TokenScores",
    "UnknownPromptError",
    "UntunedError",
    "UrialFormat",
    "backend_names",
    "builtin_prompt_names",
    "load_backend",
    "load_prompt",
    "neutralise",
    "parse_prompt",
]
