import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from untuned.errors import PromptFileError, UnknownPromptError
from untuned.prompt import builtin_prompt_names, load_prompt, parse_prompt


def test_bundled_sets_have_the_documented_sizes():
    assert builtin_prompt_names() == ["helpful", "long", "one-shot", "safe", "zero-shot"]
    sizes = {name: load_prompt(name).k for name in builtin_prompt_names()}
    assert sizes == {"helpful": 3, "long": 8, "one-shot": 1, "safe": 3, "zero-shot": 0}
    for name in builtin_prompt_names():
        prompt = load_prompt(name)
        assert prompt.name == name and prompt.system and prompt.description


def test_safe_set_shows_a_refusal_and_helpful_has_none():
    refusals = lambda p: [e for e in p.examples if "can't help" in e.answer]  # noqa: E731
    assert len(refusals(load_prompt("safe"))) == 1
    assert refusals(load_prompt("helpful")) == []


def test_round_trip_and_hash(tmp_path: Path):
    original = load_prompt("helpful")
    path = tmp_path / "mine.urial"
    path.write_text(original.to_text(), encoding="utf-8")
    again = load_prompt(path)
    assert again == original
    assert again.content_hash == original.content_hash
    assert load_prompt("safe").content_hash != original.content_hash


def test_answers_keep_their_code_fences():
    code = load_prompt("helpful").examples[2].answer
    assert "```python" in code and code.rstrip().endswith("memory.")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: x\nfoo bar\n=== system ===\nhi\n", 2, "expected 'key: value'"),
        ("colour: red\n=== system ===\nhi\n", 1, "unknown header key 'colour'"),
        ("=== system ===\nhi\n=== querry ===\nq\n", 3, "unknown section 'querry'"),
        ("=== system ===\nhi\n=== query\nq\n", 3, "malformed section marker"),
        ("=== system ===\nhi\n=== answer ===\na\n", 3, "no query before it"),
        ("=== system ===\nhi\n=== query ===\nq\n=== query ===\nq2\n=== answer ===\na\n", 5, "no answer between"),
        ("=== system ===\nhi\n\n=== query ===\nq\n", 4, "no answer section after it"),
        ("=== system ===\n\n\n=== query ===\nq\n=== answer ===\na\n", 1, "the system section is empty"),
        ("=== query ===\nq\n=== answer ===\na\n=== system ===\nhi\n", 5, "must come first"),
        ("# only a comment\nname: x\n", 2, "no sections found"),
    ],
)
def test_malformed_files_name_the_line(text, line, fragment):
    with pytest.raises(PromptFileError) as info:
        parse_prompt(text, source="bad.urial")
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"bad.urial, line {line}:")


def test_file_error_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.urial"
    path.write_text("name: b\n=== system ===\nok\n=== answer ===\nno query\n")
    with pytest.raises(PromptFileError, match=r"broken\.urial, line 4: an answer section with no query"):
        load_prompt(path)


def test_unknown_names_list_the_bundled_sets(tmp_path: Path):
    with pytest.raises(UnknownPromptError, match="unknown prompt 'helpfull'.*helpful, long, one-shot, safe, zero-shot"):
        load_prompt("helpfull")
    with pytest.raises(UnknownPromptError, match="does not exist"):
        load_prompt(tmp_path / "missing.urial")


def test_zero_shot_file_without_examples_is_valid():
    prompt = parse_prompt("=== system ===\nBe helpful.\n")
    assert prompt.k == 0 and prompt.system == "Be helpful." and prompt.name == "custom"


def test_prompts_build_from_your_own_examples(tmp_path):
    """`prompts build`: k examples (in order, or drawn with a seed) and a system text into a .urial file
    that --prompt reads back; too many examples for the model's window is refused, saying by how much."""
    from typer.testing import CliRunner

    from untuned.cli import app

    rows = [{"query": f"Question {i}?", "answer": f"Answer {i}, in my style."} for i in range(40)]
    rows.append({"messages": [{"role": "user", "content": "Chat question?"}, {"role": "assistant", "content": "Chat answer."}]})
    examples = tmp_path / "mine.jsonl"
    examples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "system.txt").write_text("Answer in my style.\n")
    runner, out = CliRunner(), tmp_path / "mine.urial"
    common = [str(examples), "--system", str(tmp_path / "system.txt"), "--model", "scripted:build", "--out", str(out)]
    result = runner.invoke(app, ["prompts", "build", *common, "-k", "3"])
    assert result.exit_code == 0, result.output
    built = load_prompt(out)
    assert built.name == "mine" and built.system == "Answer in my style."
    assert [e.query for e in built.examples] == ["Question 0?", "Question 1?", "Question 2?"]
    result = runner.invoke(app, ["prompts", "build", *common, "-k", "5", "--seed", "7"])
    drawn = [e.query for e in load_prompt(out).examples]
    assert result.exit_code == 0 and len(drawn) == 5 and drawn != [f"Question {i}?" for i in range(5)]
    assert runner.invoke(app, ["prompts", "build", *common]).exit_code == 0 and load_prompt(out).k == 41
    assert load_prompt(out).examples[-1].query == "Chat question?"
    too_many = runner.invoke(app, ["prompts", "build", *common, "--n-ctx", "512"])
    assert too_many.exit_code == 2 and "too many to leave 256" in too_many.output.replace("\n", " ")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.text(max_size=60), st.text(max_size=60)), min_size=0, max_size=4),
    st.text(max_size=60),
    st.text(max_size=30),
)
def test_whatever_the_builder_accepts_the_reader_loads_with_the_same_examples(pairs, system, description):
    from untuned.errors import UntunedError
    from untuned.prompt import Example, build_prompt_set, parse_prompt

    examples = [Example(query=q, answer=a) for q, a in pairs]
    try:
        built = build_prompt_set(examples, name="mine", system=system, description=description)
    except UntunedError:
        return
    again = parse_prompt(built.to_text(), source="mine.urial")
    assert (again.name, again.system, again.examples, again.description) == (
        built.name,
        built.system,
        built.examples,
        built.description,
    )
    assert again.system  # never the empty system section the reader refuses


def test_build_without_a_system_text_writes_a_set_that_loads(tmp_path):
    from untuned.prompt import Example, build_prompt_set, load_prompt

    built = build_prompt_set([Example("Hi?", "Hello.")], name="mine", system="")
    (tmp_path / "mine.urial").write_text(built.to_text())
    loaded = load_prompt(tmp_path / "mine.urial")
    assert loaded.system == load_prompt("helpful").system and loaded.examples == built.examples
