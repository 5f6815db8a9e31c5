import itertools

from untuned.conversation import DEFAULT_FORMAT
from untuned.stopping import StopScanner, clean_answer

STOPS = DEFAULT_FORMAT.stop


def _run(pieces, stops=STOPS):
    scanner = StopScanner(stops)
    shown = [scanner.feed(p) for p in pieces]
    shown.append(scanner.flush())
    return shown, scanner


def test_stop_split_at_every_point_never_leaks():
    answer = "Paris is the capital.\n\nAnything else?"
    for stop in STOPS:
        stream = answer + "\n" + stop + "\n\nmore text the model made up"
        for a, b in itertools.combinations(range(1, len(stream)), 2):
            shown, scanner = _run([stream[:a], stream[a:b], stream[b:]])
            assert "".join(shown) == answer, (stop, a, b)
            assert scanner.stopped and scanner.matched == stop


def test_one_character_at_a_time():
    stream = "x = 1\n```\n\n````\n# Query:"
    shown, scanner = _run(list(stream))
    assert "".join(shown) == "x = 1\n```"
    assert scanner.stopped


def test_near_misses_are_released():
    shown, scanner = _run(["three ``` ticks", " and # Quer", "y without newline"])
    assert "".join(shown) == "three ``` ticks and # Query without newline"
    assert not scanner.stopped


def test_whitespace_is_held_until_text_follows():
    scanner = StopScanner(STOPS)
    assert scanner.feed("\n  Hello") == "Hello"
    assert scanner.feed(" \n") == ""
    assert scanner.feed("world") == " \nworld"
    assert scanner.feed("\n\n") == ""
    assert scanner.flush() == ""


def test_nothing_after_stop():
    scanner = StopScanner(["END"])
    assert scanner.feed("aEN") == "a"
    assert scanner.feed("Db") == ""
    assert scanner.feed("more") == ""
    assert scanner.flush() == ""


def test_clean_answer_drops_a_dangling_fence_only():
    assert clean_answer("  Answer.\n```\n\n") == "Answer."
    balanced = "Code:\n```python\nx = 1\n```"
    assert clean_answer(balanced) == balanced
    assert clean_answer("Code:\n```python\nx = 1\n```\n```") == balanced
