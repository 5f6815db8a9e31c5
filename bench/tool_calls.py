"""Tool calls on the default model (issue 31): 20 small tasks, each offering one or two tools and needing
one of them, answered greedily by the bundled gemma-3-270m base in the `helpful` prompt set with the
tool-use format (untuned.tools): tool_choice auto with the grammar (text, or one call whose arguments
match its tool's schema), the same prompt without it (free text read back as a call if it is one), and
tool_choice required (the grammar allows a call to any offered tool, nothing else: which tool it picks).

Counted per side: answers that are a call, calls to the right tool, and right calls whose arguments are
valid under the tool's schema (jsonschema). Run: .venv/bin/python bench/tool_calls.py
"""

from __future__ import annotations

import json

import jsonschema
from rich.console import Console
from rich.table import Table
from smoke import sized

from untuned import Assistant, Sampling
from untuned.backends import default_gguf_path
from untuned.backends.llamacpp import LlamaCppBackend
from untuned.conversation import Conversation
from untuned.prompt import load_prompt
from untuned.tools import Tool, call_grammar, parse_call


def _tool(name: str, description: str, **properties: dict) -> Tool:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return Tool(name, description, schema)


TEXT, NUMBER = {"type": "string"}, {"type": "number"}
WEATHER = _tool("get_weather", "The weather now in a city.", city=TEXT)
TIME = _tool("get_time", "The local time in a city.", city=TEXT)
CURRENCY = _tool("convert_currency", "Convert an amount between currencies.", amount=NUMBER, source=TEXT, target=TEXT)
CALC = _tool("calculate", "Evaluate an arithmetic expression.", expression=TEXT)
DEFINE = _tool("define_word", "The dictionary definition of a word.", word=TEXT)
EMAIL = _tool("send_email", "Send an email.", to=TEXT, subject=TEXT, body=TEXT)
TRANSLATE = _tool("translate", "Translate a text into a language.", text=TEXT, language=TEXT)
SEARCH = _tool("search_web", "Search the web.", query=TEXT)

TASKS = [  # (question, tools offered, the tool it needs)
    ("What's the weather in Madrid right now?", [WEATHER], "get_weather"),
    ("Is it raining in Dublin?", [WEATHER, TIME], "get_weather"),
    ("What time is it in Tokyo?", [TIME], "get_time"),
    ("Tell me the current time in New York.", [WEATHER, TIME], "get_time"),
    ("How much is 250 US dollars in euros?", [CURRENCY], "convert_currency"),
    ("Convert 1000 yen to pounds.", [CURRENCY, CALC], "convert_currency"),
    ("What is 17 times 23?", [CALC], "calculate"),
    ("Compute (45 + 12) / 3.", [CALC, CURRENCY], "calculate"),
    ("What does the word 'ephemeral' mean?", [DEFINE], "define_word"),
    ("Define 'ubiquitous' for me.", [DEFINE, SEARCH], "define_word"),
    ("Email alice@example.com that the meeting moved to 3pm.", [EMAIL], "send_email"),
    ("Send Bob (bob@example.com) a note saying thanks for lunch.", [EMAIL, SEARCH], "send_email"),
    ("Translate 'good morning' into Spanish.", [TRANSLATE], "translate"),
    ("How do you say 'thank you' in Japanese?", [TRANSLATE, DEFINE], "translate"),
    ("Search the web for the tallest building in Africa.", [SEARCH], "search_web"),
    ("Find recent news about the Mars rover.", [SEARCH, WEATHER], "search_web"),
    ("What's the temperature in Cairo?", [WEATHER, CURRENCY], "get_weather"),
    ("What's 15% of 80?", [CALC, DEFINE], "calculate"),
    ("What time is it in Sydney?", [TIME, SEARCH], "get_time"),
    ("Translate 'where is the station' into German.", [TRANSLATE, EMAIL], "translate"),
][: sized(20, 2)]


def main() -> None:
    backend = LlamaCppBackend(default_gguf_path(), n_ctx=4096)
    bot = Assistant(backend, load_prompt("helpful"), Sampling(max_tokens=96, temperature=0))
    sides = ("auto, grammar", "auto, no grammar", "required, grammar")
    counts = {side: {"call": 0, "right tool": 0, "valid arguments": 0} for side in sides}
    try:
        for question, tools, wanted in TASKS:
            conversation = Conversation(load_prompt("helpful"), tools=tuple(tools))
            conversation.add_user(question)
            auto, required = (call_grammar(tools, text_allowed=allowed) for allowed in (True, False))
            samplings = (
                bot.sampling.model_copy(update={"grammar": auto}),
                bot.sampling,
                bot.sampling.model_copy(update={"grammar": required}),
            )
            for side, sampling in zip(sides, samplings):
                call = parse_call(bot.complete(conversation, sampling=sampling).text, tools)
                if call is None:
                    continue
                counts[side]["call"] += 1
                if call.name != wanted:
                    continue
                counts[side]["right tool"] += 1
                schema = next(t.parameters for t in tools if t.name == wanted)
                try:
                    jsonschema.validate(json.loads(call.arguments), schema)
                    counts[side]["valid arguments"] += 1
                except jsonschema.ValidationError:
                    pass
    finally:
        backend.close()
    table = Table("side", "answers that are a call", "right tool", "right tool, valid arguments", title=f"{len(TASKS)} tasks")
    for side, found in counts.items():
        table.add_row(side, *(f"{found[k]}/{len(TASKS)}" for k in ("call", "right tool", "valid arguments")))
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
