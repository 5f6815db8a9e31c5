"""The chat page as a URIAL workbench, driven in headless Chromium: stop, reset, settings, the prompt
panel, side by side, the shift of every token, the examples editor, and model output that can never
become markup. The scripted model answers what the page's question scripts, so no timing is left to
the machine; the shift test uses the bundled gemma."""

from __future__ import annotations

import json
import time

import pytest
from helpers import http
from helpers.servers import untuned_server

from untuned.conversation import Conversation
from untuned.prompt import load_prompt


@pytest.fixture(scope="module")
def url():
    with untuned_server("--model", "scripted:page", "--parallel", "2") as root:
        yield root


@pytest.fixture
def page(url, browser):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(url)
    page.evaluate("localStorage.clear()")
    page.reload()
    page.wait_for_function("document.getElementById('promptset').options.length > 1")
    yield page
    context.close()


def workbench(browser, root: str, *, max_tokens: int):
    """A fresh page on ``root`` with an empty conversation and answers of at most ``max_tokens``."""
    page = browser.new_page()
    page.goto(root)
    page.wait_for_function("document.getElementById('promptset').options.length > 1")
    page.evaluate("localStorage.clear()")
    page.click("#show-settings")
    page.fill("#max_tokens", str(max_tokens))
    return page


def ask(page, text: str) -> None:
    page.fill("#input", text)
    page.keyboard.press("Enter")


def wait_state(page, state: str, selector: str = ".answer", timeout: float = 30) -> None:
    page.wait_for_function(
        f"[...document.querySelectorAll({json.dumps(selector)})].some(a => a.dataset.state === {json.dumps(state)})",
        timeout=timeout * 1000,
    )


def test_stop_mid_answer_frees_the_slot_and_the_chat_goes_on(page, url):
    ask(page, "SCRIPT: one two @delay=0.2 @repeat=200:tick")
    page.wait_for_function("document.querySelector('.answer .msg').textContent.includes('tick')")
    assert page.is_visible("#stop") and not page.is_visible("#send")
    page.keyboard.press("Escape")
    wait_state(page, "stopped")
    deadline = time.monotonic() + 10
    while http.get(f"{url}/health").json()["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.get(f"{url}/health").json()["active"] == 0  # the server freed the slot
    ask(page, "SCRIPT: after the stop")
    page.wait_for_function("document.querySelectorAll('.answer')[1]?.dataset.state === 'done'")
    assert page.inner_text(".turn.assistant:last-child .msg").strip() == "after the stop"


def test_reset_mid_answer_then_ask_again(page):
    ask(page, "SCRIPT: stale @delay=0.2 @repeat=100:tick")
    page.wait_for_function("document.querySelector('.answer .msg').textContent.includes('stale')")
    page.click("#reset")
    assert page.locator(".turn").count() == 0
    ask(page, "SCRIPT: fresh answer")
    wait_state(page, "done")
    time.sleep(1.0)  # the stale stream, had it gone on, would have drawn by now
    assert page.locator(".turn.user").count() == 1 and page.locator(".answer").count() == 1
    assert page.inner_text(".answer .msg").strip() == "fresh answer"


def test_settings_reach_the_request_and_finish_and_speed_are_shown(page):
    page.click("#show-settings")
    page.fill("#temperature", "0.7")
    page.fill("#max_tokens", "3")
    ask(page, "SCRIPT: @temperature b c d e f")
    wait_state(page, "done")
    assert page.inner_text(".answer .msg").strip() == "t=0.7 b c"
    assert page.inner_text(".answer .finish") == "cut at max tokens"
    assert page.locator(".answer .speed").count() == 1


def test_prompt_panel_shows_exactly_what_the_model_sees(page):
    page.click("#show-prompt")
    page.fill("#input", "Why is the sky blue?")
    page.wait_for_function("document.getElementById('prompttext').textContent.includes('Why is the sky blue?')")
    conversation = Conversation(load_prompt("helpful"))  # what `untuned ask --show-prompt` prints
    conversation.add_user("Why is the sky blue?")
    assert page.inner_text("#prompttext") == conversation.render().text
    assert "tokens" in page.inner_text("#promptsize") and "window" in page.inner_text("#promptsize")
    page.select_option("#promptset", "none")
    page.wait_for_function("!document.getElementById('prompttext').textContent.includes('# Query')")
    assert page.inner_text("#prompttext").strip() == "Why is the sky blue?"


def shown_prompt(page) -> str:
    """The prompt the server renders for the conversation the page shows: each question as shown, each
    answer's first side as shown (its text in the page), then the placeholder of the next question."""
    conversation = Conversation(load_prompt("helpful"))
    for turn in page.query_selector_all(".turn"):
        text = turn.query_selector(".msg").inner_text()
        if "user" in turn.get_attribute("class"):
            conversation.add_user(text)
        else:
            conversation.add_assistant(text.strip())
    conversation.add_user(page.input_value("#input").strip() or "(your next question)")
    return conversation.render().text


def prompt_view_settles(page) -> str:
    page.wait_for_timeout(300)  # the view follows the conversation after each change
    page.wait_for_function("!document.querySelector('.answer[data-state=streaming]')")
    return page.inner_text("#prompttext")


def test_the_prompt_view_is_the_conversation_shown_after_stop_ask_reload_regenerate_and_edit(page):
    page.click("#show-prompt")
    ask(page, "SCRIPT: Once upon a time @delay=0.2 @repeat=200:tick")
    page.wait_for_function("document.querySelector('.answer .msg').textContent.includes('tick')")
    page.keyboard.press("Escape")
    wait_state(page, "stopped")
    stopped = page.locator(".answer[data-state=stopped]")
    assert stopped.locator(".copy").count() == stopped.locator(".regenerate").count() == stopped.locator(".shift").count() == 1
    partial = stopped.locator(".msg").inner_text()
    assert partial.startswith("Once upon a time") and "tick" in partial
    assert prompt_view_settles(page) == shown_prompt(page)
    ask(page, "SCRIPT: Red, green and blue.")
    page.wait_for_function("document.querySelectorAll('.answer')[1]?.dataset.state === 'done'")
    assert page.locator(".turn.user").count() == 2  # two questions, never glued into one
    view = prompt_view_settles(page)
    assert view == shown_prompt(page) and view.count("SCRIPT: Once upon a time") == 1 and partial.strip() in view
    page.reload()
    page.wait_for_function("document.querySelectorAll('.answer').length === 2")
    page.click("#show-prompt")
    assert prompt_view_settles(page) == shown_prompt(page)
    assert page.input_value("#max_tokens") == "128"
    page.click(".turn.assistant:last-child .regenerate")
    page.wait_for_function("document.querySelectorAll('.answer')[1]?.dataset.state === 'done'")
    assert prompt_view_settles(page) == shown_prompt(page)
    page.click(".turn.user:nth-last-child(2) .edit")
    assert page.input_value("#input") == "SCRIPT: Red, green and blue."
    assert prompt_view_settles(page) == shown_prompt(page)


def test_a_stop_before_the_first_token_gives_the_question_back(page):
    ask(page, "SCRIPT: @delay=30 never")
    page.wait_for_selector(".answer .waiting")
    page.keyboard.press("Escape")
    page.wait_for_function("document.querySelectorAll('.turn').length === 0")
    assert page.input_value("#input") == "SCRIPT: @delay=30 never"


def test_settings_persist_with_the_conversation_and_the_page_logs_no_errors(browser, url):
    context = browser.new_context()
    page = context.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("response", lambda response: errors.append(f"{response.status} {response.url}") if response.status >= 400 else None)
    page.goto(url)
    page.wait_for_function("document.getElementById('promptset').options.length > 1")
    page.click("#show-settings")
    page.fill("#max_tokens", "77")
    page.fill("#repetition_penalty", "1")
    page.keyboard.press("Tab")
    page.reload()
    page.wait_for_function("document.getElementById('promptset').options.length > 1")
    assert page.input_value("#max_tokens") == "77" and page.input_value("#repetition_penalty") == "1"
    assert not page.inner_text("header .info").strip().endswith("·")
    assert errors == []
    context.close()


def test_model_output_never_becomes_markup(page):
    ask(page, "SCRIPT: <img src=x onerror=window.pwned=1> [click](javascript:window.pwned=2) **bold** [ok](https://example.org/)")
    wait_state(page, "done")
    answer = page.locator(".answer .msg")
    assert "<img src=x onerror=window.pwned=1>" in answer.inner_text()
    assert answer.locator("img").count() == 0 and page.evaluate("window.pwned") is None
    links = answer.locator("a")
    assert links.count() == 1 and links.get_attribute("href") == "https://example.org/"
    assert "[click](javascript:window.pwned=2)" in answer.inner_text() and answer.locator("strong").inner_text() == "bold"


def test_side_by_side_and_the_conversation_kept_across_a_reload(page):
    page.check("#compare")
    ask(page, "SCRIPT: both sides answer")
    page.wait_for_function("[...document.querySelectorAll('.answer')].every(a => a.dataset.state === 'done')")
    sides = page.eval_on_selector_all(".answer", "nodes => nodes.map(n => n.dataset.side)")
    assert sides == ["urial", "none"]
    page.reload()
    page.wait_for_function("document.querySelectorAll('.answer').length === 2")
    assert page.inner_text(".turn.user .msg") == "SCRIPT: both sides answer"
    page.click("#reset")
    page.reload()
    page.wait_for_function("document.getElementById('promptset').options.length > 1")
    assert page.locator(".turn").count() == 0


def test_edit_and_regenerate(page):
    ask(page, "SCRIPT: first")
    wait_state(page, "done")
    page.click(".answer .regenerate")
    wait_state(page, "done")
    assert page.locator(".answer").count() == 1 and page.inner_text(".answer .msg").strip() == "first"
    page.click(".turn.user .edit")
    assert page.input_value("#input") == "SCRIPT: first" and page.locator(".turn").count() == 0


def test_examples_editor_tries_a_set_and_downloads_a_urial_file_that_reads_back(page, tmp_path):
    page.click("#show-editor")
    page.fill("#setname", "mine")
    before = page.locator("#examples .example").count()
    page.click("#add-example")
    page.locator("#examples .example textarea").nth(2 * before).fill("What is URIAL?")
    page.locator("#examples .example textarea").nth(2 * before + 1).fill("In-context alignment of a base model.")
    page.click("#show-prompt")
    page.wait_for_function("document.getElementById('prompttext').textContent.includes('What is URIAL?')")
    ask(page, "SCRIPT: tried")
    wait_state(page, "done")
    assert page.inner_text(".answer .who") == "base model + URIAL (mine)"
    page.click("#show-editor")
    with page.expect_download() as download:
        page.click("#download")
    path = tmp_path / "mine.urial"
    download.value.save_as(path)
    loaded, helpful = load_prompt(path), load_prompt("helpful")
    assert loaded.name == "mine" and loaded.system == helpful.system
    assert [(e.query, e.answer) for e in loaded.examples] == [(e.query, e.answer) for e in helpful.examples] + [
        ("What is URIAL?", "In-context alignment of a base model.")
    ]


def test_pair_shift_without_an_aligned_model_is_refused_by_name(url):
    refused = http.post(f"{url}/v1/untuned/shift", json={"query": "Hi", "answer": "Hello.", "mode": "pair"})
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "mode 'pair' needs an aligned model: start the server with --aligned MODEL",
        "type": "invalid_request_error",
        "param": "mode",
        "code": None,
    }


def test_a_phone_width_window_has_no_sideways_scroll(page):
    page.set_viewport_size({"width": 375, "height": 740})
    ask(page, "SCRIPT: a short answer")
    wait_state(page, "done")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


@pytest.mark.slow
def test_shift_colours_equal_untuned_shift(browser, tmp_path):
    """The page colours an answer's tokens by their rank under the base model with no URIAL prefix:
    the same categories `untuned shift context` gives that answer on its base side."""
    from typer.testing import CliRunner

    from untuned.cli import app
    from untuned.shift import category

    with untuned_server("--parallel", "2") as root:
        page = workbench(browser, root, max_tokens=24)
        ask(page, "What is the capital of France?")
        wait_state(page, "done", timeout=120)
        answer = page.evaluate("JSON.parse(localStorage.getItem('untuned-conversation'))[1].answers[0].text")
        page.click(".answer .shift")
        page.wait_for_function("document.querySelectorAll('.answer .tok').length > 0", timeout=120_000)
        shown = page.eval_on_selector_all(".answer .tok", "nodes => nodes.map(n => [n.textContent, n.dataset.category])")
        summary = page.inner_text(".answer .shiftline")
        page.click(".answer .shiftview")
        sampler = page.eval_on_selector_all(".answer .tok", "nodes => nodes.map(n => n.dataset.category)")
        sampler_line = page.inner_text(".answer .shiftline")
        page.close()
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"id": "1", "instruction": "What is the capital of France?", "output": answer}) + "\n")
    result = CliRunner().invoke(app, ["shift", "context", "--answers", str(answers), "--out", str(tmp_path / "s"), "--no-plots"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "s" / "tokens.jsonl").read_text().splitlines()]
    assert [r["category"] for r in rows] == [category for _, category in shown]
    assert "".join(text for text, _ in shown).strip() == answer.strip()  # the answer as it was, coloured
    assert summary.startswith("model view: unshifted") and "no sampler in the ranks" in summary  # what it compares
    # the sampler view: each answer token's rank where it was drawn (base + URIAL), as the CLI records it
    drawn = [r["answer_aligned_rank"] if r["answer_id"] is not None else r["aligned_rank"] for r in rows]
    assert sampler == [category(rank) for rank in drawn]
    assert sampler_line.startswith("sampler view (temperature 0, repetition penalty 1.1): the answer took base + URIAL")


@pytest.mark.slow
def test_side_by_side_with_an_aligned_model_in_its_own_chat_template(browser, smollm_path):
    """`serve --aligned MODEL`: one question, three answers: base + URIAL, base alone, and the aligned
    (instruct) model answering in its own chat template, as the paper compares them."""
    with untuned_server("--model", "scripted:base", "--aligned", str(smollm_path), "--parallel", "3") as root:
        models = http.get(f"{root}/v1/models").json()["data"]
        assert [m["prompt"] for m in models] == ["helpful", None]
        refused = http.post(f"{root}/v1/untuned/shift", json={"query": "Hi", "answer": "Hello.", "mode": "pair"})
        assert refused.status_code == 400 and "do not share a tokenizer" in refused.json()["error"]["message"]
        page = workbench(browser, root, max_tokens=12)
        page.check("#compare")
        ask(page, "SCRIPT: the base answers")
        page.wait_for_function(
            "document.querySelectorAll('.answer').length === 3 && "
            "[...document.querySelectorAll('.answer')].every(a => a.dataset.state === 'done')",
            timeout=120_000,
        )
        sides = page.eval_on_selector_all(".answer", "nodes => nodes.map(n => n.dataset.side)")
        texts = page.eval_on_selector_all(".answer .msg", "nodes => nodes.map(n => n.textContent.trim())")
        page.close()
    assert sides == ["urial", "none", "aligned"]
    assert texts[0] == texts[1] == "the base answers" and texts[2] and texts[2] != texts[0]


@pytest.mark.slow
def test_pair_shift_of_the_aligned_answer_equals_untuned_shift_pair(browser, tmp_path):
    """Side by side with an aligned model sharing the base's tokenizer (two tiny models, the aligned one
    with a chat template): its answer's tokens are coloured by their rank under the base model, with the
    aligned model's own probability on hover: what `untuned shift pair` gives that answer."""
    from helpers.tiny import CHAT_TEMPLATE, make_tiny_llama
    from typer.testing import CliRunner

    from untuned.cli import app

    base = make_tiny_llama(tmp_path / "base", seed=1, init_range=0.5)
    aligned = make_tiny_llama(tmp_path / "aligned", seed=2, init_range=0.5, chat_template=CHAT_TEMPLATE)
    prompt = tmp_path / "tiny.urial"
    prompt.write_text("name: tiny\n\n=== system ===\nAnswer briefly.\n")
    options = ("--model", str(base), "--aligned", str(aligned), "--prompt", str(prompt), "--n-ctx", "1024", "--parallel", "3")
    with untuned_server(*options) as root:
        page = workbench(browser, root, max_tokens=12)
        page.check("#compare")
        ask(page, "What is two plus two?")
        page.wait_for_function(
            "document.querySelectorAll('.answer').length === 3 && "
            "[...document.querySelectorAll('.answer')].every(a => a.dataset.state === 'done')",
            timeout=120_000,
        )
        answer = page.evaluate("JSON.parse(localStorage.getItem('untuned-conversation'))[1].answers[2].text")
        page.click(".answer[data-side='aligned'] .shift")
        page.wait_for_function("document.querySelectorAll(\".answer[data-side='aligned'] .tok\").length > 0", timeout=120_000)
        shown = page.eval_on_selector_all(
            ".answer[data-side='aligned'] .tok", "nodes => nodes.map(n => [n.textContent, n.dataset.category, n.title])"
        )
        summary = page.inner_text(".answer[data-side='aligned'] .shiftline")
        page.close()
    assert answer.strip()
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"id": "1", "instruction": "What is two plus two?", "output": answer}) + "\n")
    args = ["shift", "pair", "--model", str(base), "--aligned", str(aligned), "--answers", str(answers)]
    # the page's protocol (its analyzer's defaults)
    args += ["--protocol", "ids", "--context", "plain", "--rank", "aligned-top1", "--no-end"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s"), "--no-plots"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "s" / "tokens.jsonl").read_text().splitlines()]
    assert [r["category"] for r in rows] == [category for _, category, _ in shown]
    assert "".join(text for text, _, _ in shown).strip() == answer.strip()
    for row, (_, _, title) in zip(rows, shown):
        assert f"base: rank {row['rank']} · p {row['prob']:.3f} · aligned: rank {row['aligned_rank']}" in title
        assert f"p {row['aligned_prob']:.3f} · KL {row['kl']:.3f}" in title
        if row.get("answer_id") is not None:  # the aligned model's first choice was ranked, not the answer's token
            assert f"first choice here: {json.dumps(row['text'], ensure_ascii=False)} (ranked)" in title
    assert "ranked under the base model's distribution without a URIAL prefix" in summary


@pytest.mark.slow
def test_shift_endpoint_separates_the_model_from_the_sampler():
    """/v1/untuned/shift on the bundled gemma: an answer drawn with a heavy repetition penalty. The model view
    ranks the URIAL side's own first choice (not the answer's token where the penalty chose another), so the
    penalty is not in its ranks; the sampler view ranks the answer's own tokens where they were drawn, and
    finds the penalty there. The shown tokens are the answer's; refusals name their field."""
    from untuned.shift import category

    question = [{"role": "user", "content": "Explain, step by step, how to make a cup of tea."}]
    with untuned_server("--parallel", "1") as root:
        asked = {"messages": question, "max_tokens": 40, "temperature": 0, "repetition_penalty": 1.8}
        answer = http.post(f"{root}/v1/chat/completions", json=asked).json()["choices"][0]["message"]["content"]
        body = {"messages": question, "answer": answer, "mode": "context", "prompt": "helpful"}
        view = http.post(f"{root}/v1/untuned/shift", json=body).json()
        alone = http.post(f"{root}/v1/untuned/shift", json={**body, "sampled_from": "none"}).json()
        later = question + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And coffee?"}]
        second = http.post(f"{root}/v1/untuned/shift", json={**body, "messages": later, "answer": "Grind the beans."})
        refusals = [
            http.post(f"{root}/v1/untuned/shift", json={**body, **change})
            for change in (
                {"sampled_from": "aligned"},
                {"prompt": "none"},
                {"query": "Hi"},
                {"messages": None},
                {"mode": "pair"},
            )
        ]
    tokens, sampler = view["tokens"], view["sampler"]
    assert "".join(view["answer_texts"]).strip() == answer.strip() and len(tokens) == len(sampler["ranks"]) > 8
    assert "first choice with the URIAL prefix (helpful)" in view["compared"] and "no sampler in the ranks" in view["compared"]
    off = [i for i, rank in enumerate(sampler["ranks"]) if rank > 1]
    assert off and sampler["off_first_choice"] == len(off)  # the penalty of 1.8 chose other tokens
    for i in off:  # there the model view ranked the model's own first choice, not the penalised token
        assert tokens[i]["answer_id"] is not None and tokens[i]["answer_aligned_rank"] == sampler["ranks"][i]
    assert sampler["categories"] == [category(rank) for rank in sampler["ranks"]]
    assert alone["tokens"] == tokens  # the model view does not depend on who wrote the answer
    assert alone["sampler"]["sampled_from"] == "none"
    assert alone["sampler"]["ranks"] == [t["answer_rank"] if t["answer_id"] is not None else t["rank"] for t in tokens]
    assert second.status_code == 200 and "the conversation as plain text" in second.json()["compared"]
    assert [(r.status_code, r.json()["error"]["param"]) for r in refusals] == [
        (400, "sampled_from"),
        (400, "prompt"),
        (400, "messages"),
        (400, "messages"),
        (400, "prompt"),
    ]


def test_keep_and_edit_then_keep_go_to_the_pool_that_then_answers(page, url):
    """Keep an answer as shown, edit another and keep it: the server's pool holds exactly what was shown and what
    was typed (the model's own answer beside the edit); the pool panel lists, reorders and deletes them; the
    pool chosen as the prompt set puts the kept answers in the prompt the model sees."""
    page.click("#show-settings")
    page.fill("#pool", "page-kept")
    page.dispatch_event("#pool", "change")
    ask(page, "SCRIPT: Tea is brewed from leaves @end")
    wait_state(page, "done")
    shown = page.inner_text(".answer .msg").strip()
    page.click(".answer .keep")
    page.wait_for_selector(".answer .keptnote")
    kept = http.get(f"{url}/v1/untuned/pools/page-kept").json()
    assert [(k["query"], k["answer"], k["original"]) for k in kept] == [("SCRIPT: Tea is brewed from leaves @end", shown, None)]
    ask(page, "SCRIPT: Coffee is roasted @end")
    page.wait_for_function("document.querySelectorAll('.answer .edit-keep').length === 1", timeout=30_000)
    original = page.evaluate("JSON.parse(localStorage.getItem('untuned-conversation'))[3].answers[0].text")
    page.click(".answer .edit-keep")
    page.fill("textarea.edited", "Coffee is roasted, then ground — my words.")
    page.click(".answer .keep-edited")
    page.wait_for_function("document.querySelectorAll('.answer .keptnote').length === 2", timeout=30_000)
    kept = http.get(f"{url}/v1/untuned/pools/page-kept").json()
    assert [(k["answer"], k["original"]) for k in kept] == [
        ("Coffee is roasted, then ground — my words.", original),
        (shown, None),
    ]
    assert kept[0]["model"] and kept[0]["prompt_set"]
    page.click("#show-pool")
    page.wait_for_function("document.querySelectorAll('#poolexamples .example').length === 2", timeout=30_000)
    page.click("#poolexamples .example:first-child .tools button:nth-child(2)")  # ↓: the edited one second
    page.wait_for_function(f"document.querySelector('#poolexamples .example').dataset.id === '{kept[1]['id']}'", timeout=30_000)
    assert [k["id"] for k in http.get(f"{url}/v1/untuned/pools/page-kept").json()] == [kept[1]["id"], kept[0]["id"]]
    page.select_option("#promptset", "pool:page-kept")
    prompt = http.post(
        f"{url}/v1/untuned/prompt", json={"messages": [{"role": "user", "content": "Next?"}], "prompt": "pool:page-kept"}
    ).json()
    assert "Coffee is roasted, then ground — my words." in prompt["text"] and shown in prompt["text"]
    page.click("#poolexamples .example:first-child .delete")
    page.wait_for_function("document.querySelectorAll('#poolexamples .example').length === 1", timeout=30_000)
    assert [k["answer"] for k in http.get(f"{url}/v1/untuned/pools/page-kept").json()] == [kept[0]["answer"]]
