"""Tool use on a base model (untuned.tools): the format in the URIAL prompt, the grammar llguidance holds the
answer to, and reading the answer back; the server's side is tested with real clients in
tests/test_openai_surface.py."""

from __future__ import annotations

import pytest

from untuned.backends.llamacpp.native import NativeModel
from untuned.backends.llamacpp.sampling import llguidance_tokenizer
from untuned.constraint import Constrained, Constraints
from untuned.conversation import Conversation
from untuned.errors import UntunedError
from untuned.prompt import load_prompt
from untuned.tools import EXAMPLE_TOOLS, Tool, call_grammar, call_text, chosen_tools, parse_call, tools_from_openai

WEATHER = Tool(
    "get_weather", "The weather now.", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
)


def test_tools_are_read_from_openai_s_shape_and_refused_by_name():
    [tool] = tools_from_openai([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert tool.name == "f"
    for bad, says in [
        ([{"type": "retrieval"}], "only function tools"),
        ([{"type": "function", "function": {"name": "has space"}}], "letters, digits"),
        ([{"type": "function", "function": {"name": "f"}}] * 2, "share a name"),
    ]:
        with pytest.raises(UntunedError, match=says):
            tools_from_openai(bad)
    assert chosen_tools([WEATHER], "auto") == ([WEATHER], True)
    assert chosen_tools([WEATHER], "required") == ([WEATHER], False)
    assert chosen_tools([WEATHER], "none") == ([], True)
    with pytest.raises(UntunedError, match="not among the tools"):
        chosen_tools([WEATHER], {"type": "function", "function": {"name": "other"}})


def test_a_call_and_its_result_render_as_turns_and_the_prefix_shows_the_tools():
    conversation = Conversation(load_prompt("helpful"), tools=(WEATHER,))
    conversation.add_user("Weather in Oslo?")
    conversation.add_assistant(call_text("get_weather", '{"city": "Oslo"}'))
    conversation.add_tool_result("get_weather", '{"sky": "grey"}')
    text = conversation.render().text
    assert "- get_weather: The weather now." in text and '"name": "convert_units"' in text  # the tool list, the examples
    assert text.endswith('# Result of get_weather:\n````\n{"sky": "grey"}\n````\n\n# Answer:\n````\n')
    with pytest.raises(ValueError, match="must follow the assistant's call"):
        conversation.add_tool_result("get_weather", "again")
    plain = Conversation(load_prompt("helpful"))
    plain.add_user("Weather in Oslo?")
    assert "get_weather" not in plain.render().text and "convert_units" not in plain.render().text


def test_answers_are_read_as_one_call_to_an_offered_tool_or_as_text():
    assert parse_call('{"name": "get_weather", "arguments": {"city": "Oslo"}}', [WEATHER]).arguments == '{"city": "Oslo"}'
    for text in ["It is sunny.", '{"name": "other", "arguments": {}}', '{"name": "get_weather"}', "{not json"]:
        assert parse_call(text, [WEATHER]) is None


def test_the_grammars_compile_in_llguidance_and_hold_the_answer(gemma_path):
    """The call grammar accepts exactly a call to an offered tool; with text allowed, text that does not
    begin a JSON object too (checked token by token by llguidance over the model's own vocabulary)."""
    model = NativeModel(gemma_path)
    try:
        constraints = Constraints(lambda: llguidance_tokenizer(model), model.n_vocab)
        tools = [WEATHER, *EXAMPLE_TOOLS]

        def accepts(text_allowed: bool, text: str) -> bool:
            matcher = constraints.matcher(Constrained("lark", call_grammar(tools, text_allowed=text_allowed)))
            for token in model.tokenize(text, add_special=False):
                if not matcher.allowed()[token]:
                    return False
                matcher.accept(token)
            return True

        call = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
        assert accepts(True, call) and accepts(False, call)
        assert accepts(True, "It is sunny in Oslo.") and not accepts(False, "It is sunny in Oslo.")
        assert not accepts(True, '{"name": "launch_rocket", "arguments": {}}')
        assert not accepts(False, '{"name": "get_weather", "arguments": {"town": "Oslo"}}')
    finally:
        model.close()


def test_objects_that_list_their_properties_are_closed_and_any_object_stays_open():
    from untuned.tools import closed_objects

    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}}
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is False and closed["properties"]["a"]["additionalProperties"] is False
    assert closed_objects({"type": "object"}) == {"type": "object"}  # json_object: any object
    kept = {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "integer"}}
    assert closed_objects(kept) == kept
    assert closed_objects({"enum": [{"properties": {}}]}) == {"enum": [{"properties": {}}]}  # values, not schemas


def test_the_mask_is_applied_where_the_sampler_reads_and_broken_rows_end_only_their_request(gemma_path):
    """masked_choice on gemma's real vocabulary: greedy's shortcut (the likeliest token, when allowed) chooses
    what masking the whole row chooses; a row left with nothing finite, or with NaN, is an error naming why;
    the row is given back as it was."""
    import numpy as np

    from untuned.constraint import masked_choice
    from untuned.errors import ConstraintError

    model = NativeModel(gemma_path)
    try:
        constraints = Constraints(lambda: llguidance_tokenizer(model), model.n_vocab)
        rng = np.random.default_rng(7)
        for _ in range(5):
            row = rng.normal(size=model.n_vocab).astype(np.float32)
            before = row.copy()
            fast = masked_choice(
                row, constraints.matcher(Constrained("json_schema", '{"type": "object"}')), lambda: int(row.argmax()), greedy=True
            )
            whole = masked_choice(
                row, constraints.matcher(Constrained("json_schema", '{"type": "object"}')), lambda: int(row.argmax())
            )
            assert fast == whole and model.piece(fast).lstrip().startswith(b"{") and np.array_equal(row, before)
        dead = np.full(model.n_vocab, -np.inf, dtype=np.float32)
        with pytest.raises(ConstraintError, match="no token the grammar allows has a finite probability"):
            masked_choice(dead, constraints.matcher(Constrained("json_schema", '{"type": "object"}')), lambda: 0)
        broken = np.zeros(model.n_vocab, dtype=np.float32)
        broken[5] = np.nan
        with pytest.raises(ValueError, match="NaN logits"):
            masked_choice(broken, None, lambda: 0)
    finally:
        model.close()
