"""`untuned serve` run for real (the CLI as a subprocess) and used by real clients: the HTTP protocol
on the scripted model (tests/scripted), what depends on the model on the bundled gemma base (slow)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from helpers import http, run_async
from helpers.servers import run_schemathesis, untuned_server

from untuned.prompt import load_prompt
from untuned.server import build_conversation
from untuned.server.wire import Message

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def root():
    with untuned_server() as url:
        yield url


@pytest.fixture(scope="module")
def scripted():
    """A server over the scripted test model (tests/scripted): time is what its scripts say. Its tokens are
    bytes, so its window is wide enough for a judge's prompt (a URIAL prefix and the judge's template)."""
    with untuned_server("--model", "scripted:served", "--n-ctx", "16384") as url:
        yield url


@pytest.fixture(scope="module")
def locked():
    """A scripted server with an API key, one request at a time, no queue and a 2-second limit per request."""
    with untuned_server(
        "--model", "scripted:locked", "--api-key", KEY, "--parallel", "1", "--max-waiting", "0", "--timeout", "2"
    ) as url:
        yield url


@pytest.fixture
def client(root):
    return openai.OpenAI(base_url=f"{root}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def scripted_client(scripted):
    return openai.OpenAI(base_url=f"{scripted}/v1", api_key="unused", max_retries=0)


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


@pytest.mark.slow
def test_chat_with_the_openai_client(client):
    reply = client.chat.completions.create(model="any", messages=ask("What is the capital of France?"), max_tokens=40)
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    usage = reply.usage
    assert usage.prompt_tokens > 500  # the URIAL prefix is in the prompt
    assert 0 < usage.completion_tokens <= 40 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_gives_the_same_answer_in_chunks(scripted_client):
    client = scripted_client
    question = ask("SCRIPT: Red, orange and yellow are colours of the rainbow.")
    whole = client.chat.completions.create(model="any", messages=question, max_tokens=40).choices[0].message.content
    assert whole == "Red, orange and yellow are colours of the rainbow."
    chunks = list(
        client.chat.completions.create(
            model="any", messages=question, max_tokens=40, stream=True, stream_options={"include_usage": True}
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces).strip() == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]  # the script ended before the 40-token limit
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_async_client_concurrent_requests_all_answered(scripted):
    async def main():
        client = openai.AsyncOpenAI(base_url=f"{scripted}/v1", api_key="unused", max_retries=0)
        plain = [client.chat.completions.create(model="m", messages=ask(q), max_tokens=12) for q in ("Hi!", "What is 2+2?")]
        streamed = await client.chat.completions.create(model="m", messages=ask("Say hello."), max_tokens=12, stream=True)
        texts = [r.choices[0].message.content for r in await asyncio.gather(*plain)]
        pieces = [c.choices[0].delta.content or "" async for c in streamed if c.choices]
        return texts, "".join(pieces)

    texts, streamed = run_async(main())
    assert texts == ["You said: Hi!", "You said: What is 2+2?"] and streamed.strip() == "You said: Say hello."


def test_raw_completion_has_no_urial_prefix(scripted_client):
    prompt = "SCRIPT: one two three four five six seven eight"
    reply = scripted_client.completions.create(model="any", prompt=prompt, max_tokens=6)
    assert reply.usage.prompt_tokens == len(prompt) + 1 and reply.choices[0].finish_reason == "length"  # bytes + BOS
    assert reply.usage.completion_tokens == 6 and reply.choices[0].text == "one two three four five six "


def test_stop_strings(scripted_client):
    stopped = scripted_client.chat.completions.create(
        model="any", messages=ask("SCRIPT: It is Paris, of course."), max_tokens=40, stop=["Paris"]
    )
    assert stopped.choices[0].message.content == "It is" and stopped.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_stop_strings_and_seeded_sampling(client):
    messages = ask("What is the capital of France?")
    stopped = client.chat.completions.create(model="any", messages=messages, max_tokens=40, stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content
    one, two = (
        client.chat.completions.create(model="any", messages=messages, max_tokens=20, temperature=1.2, seed=7).choices[0]
        for _ in range(2)
    )
    assert one.message.content == two.message.content


def test_models_health_page_and_schema(scripted, scripted_client):
    card = scripted_client.models.list().data[0]
    assert card.id == "scripted:served" and card.model_extra["prompt"] == "helpful"
    assert http.get(f"{scripted}/health").json()["status"] == "ok"
    page = http.get(scripted)
    assert page.status_code == 200 and "/v1/chat/completions" in page.text
    paths = http.get(f"{scripted}/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health"} <= set(paths)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": []}, "at least 1"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty user message"),
        ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, "must be the user"),
        ({"messages": [{"role": "system", "content": "Be brief."}]}, "must be the user"),
        ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages.0.role"),
        ({"messages": ask("Hi"), "temperature": "hot"}, "temperature"),
        ({"messages": ask("Hi"), "max_tokens": 0}, "max_tokens"),
        ({"messages": ask("Hi"), "n": 17}, "n:"),
        ({"messages": ask("Hi"), "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": ask("word " * 5000)}, "tokens too many"),
        ({"model": "x"}, "messages"),
    ],
)
def test_bad_requests_get_openai_style_400(scripted, body, fragment):
    response = http.post(f"{scripted}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"


def test_context_overflow_says_by_how_much(scripted):
    response = http.post(f"{scripted}/v1/completions", json={"prompt": "word " * 3400}, timeout=60)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "context_length_exceeded"
    excess = int(re.search(r"(\d+) tokens too many", error["message"]).group(1))
    assert excess == 17000 + 1 - 16384 + 1  # 17000 byte tokens + BOS against a 16384-token window, one left to answer
    # with max_tokens named, the prompt and the answer it asks for must fit: refused with both numbers
    asked = http.post(f"{scripted}/v1/completions", json={"prompt": "word " * 3000, "max_tokens": 2000}, timeout=60)
    assert asked.status_code == 400 and asked.json()["error"]["param"] == "max_tokens"
    assert "the prompt is 15001 tokens and max_tokens 2000: 17001 in all" in asked.json()["error"]["message"]


def test_malformed_and_oversized_bodies(scripted):
    root = scripted
    broken = http.post(f"{root}/v1/chat/completions", content=b'{"messages": [', headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    huge = http.post(f"{root}/v1/chat/completions", json={"messages": ask("x" * 1_100_000)})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b"x" * 100_000

    streamed = http.post(f"{root}/v1/completions", content=chunked(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_disconnect_mid_stream_frees_the_model(scripted):
    # 1000 tokens, 50 ms each: 50 s of work if the abandoned stream kept the model
    body = {"prompt": "SCRIPT: @delay=0.05 @repeat=1000:tick", "max_tokens": 1000, "stream": True}
    with httpx.Client(timeout=30) as client, client.stream("POST", f"{scripted}/v1/completions", json=body) as response:
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data:")
            if events == 5:
                break  # leaving the block closes the connection mid-stream
    started = time.perf_counter()
    reply = http.post(f"{scripted}/v1/completions", json={"prompt": "SCRIPT: done", "max_tokens": 3}, timeout=60)
    waited = time.perf_counter() - started
    assert reply.status_code == 200 and reply.json()["choices"][0]["text"].strip() == "done"
    assert waited < 25, f"the next request waited {waited:.1f} s: the abandoned stream kept the model"
    # the worker thread leaves the gate just after the reply's last byte: give it a moment
    deadline = time.monotonic() + 10
    while http.get(f"{scripted}/health").json()["active"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.get(f"{scripted}/health").json()["active"] == 0


def test_system_message_appended_or_replacing():
    from untuned.assistant import Assistant

    class NoModel:  # build_conversation never touches the backend
        name, context_length = "none", None

    assistant = Assistant(NoModel(), load_prompt("helpful"))  # type: ignore[arg-type]
    messages = [Message(role="system", content="Answer like a pirate."), Message(role="user", content="Hi")]
    appended = build_conversation(assistant, messages, "append").render().prefix
    replaced = build_conversation(assistant, messages, "replace").render().prefix
    original = assistant.prompt.system.strip().splitlines()[0]
    assert "Answer like a pirate." in appended and original in appended
    assert "Answer like a pirate." in replaced and original not in replaced
    two_users = build_conversation(assistant, [Message(role="user", content="A"), Message(role="user", content="B")], "append")
    assert [t.content for t in two_users.turns] == ["A\n\nB"]


def test_api_key_required_except_health_page_and_docs(locked):
    assert http.get(f"{locked}/health").status_code == 200
    assert http.get(locked).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = http.get(f"{locked}/v1/models", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    # the docs hold no data: they open, and their Authorize button takes the key for the calls they make
    schema = http.get(f"{locked}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert schema["security"] == [{"apiKey": []}] and http.get(f"{locked}/docs").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{locked}/v1", api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=f"{locked}/v1", api_key=KEY, max_retries=0)
    assert good.chat.completions.create(model="m", messages=ask("Hi"), max_tokens=4).choices[0].message.content


@pytest.mark.slow
def test_full_queue_answers_503_and_slow_requests_time_out(locked, tmp_path):
    """The scripted model holds the server until the test lets it go: no timing is left to the machine."""
    headers = {"Authorization": f"Bearer {KEY}"}
    gate = tmp_path / "go"
    streaming = threading.Event()
    results = {}

    def held_request():
        body = {"prompt": f"SCRIPT: start @wait={gate} never-seen", "max_tokens": 10, "stream": True}
        with http.stream("POST", f"{locked}/v1/completions", json=body, headers=headers, timeout=30) as response:
            for line in response.iter_lines():
                streaming.set()
                if "timeout" in line:
                    results["stream"] = json.loads(line[5:])["error"]["type"]

    worker = threading.Thread(target=held_request)
    worker.start()
    assert streaming.wait(30)
    refused = http.post(f"{locked}/v1/completions", json={"prompt": "Hi"}, headers=headers)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    worker.join(30)
    assert results["stream"] == "timeout"  # the 2-second limit ended the held stream with an error event
    gate.touch()  # the model goes on, sees the request was cancelled, and stops
    deadline = time.monotonic() + 30
    while http.get(f"{locked}/health").json()["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http.get(f"{locked}/health").json()["active"] == 0
    slow = {"prompt": "SCRIPT: @delay=1 @repeat=30:tick", "max_tokens": 30}
    answer = http.post(f"{locked}/v1/completions", json=slow, headers=headers, timeout=30)
    assert answer.status_code == 504 and answer.json()["error"]["type"] == "timeout"


def test_serve_rejects_bad_settings_before_loading():
    result = subprocess.run([sys.executable, "-m", "untuned", "serve", "--system-mode", "merge"], capture_output=True, text=True)
    assert result.returncode == 2 and "--system-mode" in result.stderr and "'merge' is not one of" in result.stderr


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(tmp_path):
    """At least 1000 generated requests against the served OpenAPI schema (the scripted model: the protocol
    alone): no 5xx, every status, content type and body as documented, no hang."""
    with untuned_server("--model", "scripted:fuzzed", "--max-tokens-limit", "4") as url:
        assert run_schemathesis(url, tmp_path, examples=200) >= 1000


@pytest.mark.slow
def test_web_page_streams_an_answer(root, browser):
    page = browser.new_page()
    page.goto(root)
    page.wait_for_function("document.getElementById('model').textContent !== '…'")
    page.evaluate("localStorage.clear()")
    assert page.inner_text("#model") == "gemma-3-270m-urial"
    page.wait_for_function("document.getElementById('promptset').value !== ''")  # the sets arrive on their own request
    assert page.input_value("#promptset") == "helpful"
    page.fill("#input", "What is the capital of France?")
    page.keyboard.press("Enter")
    lengths = set()
    deadline = time.monotonic() + 60
    while page.get_attribute(".answer", "data-state") == "streaming" and time.monotonic() < deadline:
        lengths.add(len(page.inner_text(".answer .msg")))
        time.sleep(0.02)
    assert page.get_attribute(".answer", "data-state") == "done"
    assert "Paris" in page.inner_text(".answer .msg")
    assert len(lengths - {0}) >= 2, "the answer appeared at once instead of streaming"
    page.click("#reset")
    assert page.locator(".turn").count() == 0
    page.close()


def test_untuned_serve_can_be_a_judge_endpoint(scripted, tmp_path):
    """The judge speaks to any OpenAI-compatible server, ours included (a base model is no judge:
    its verdict may well be unreadable, but it is recorded, never lost or invented)."""
    root = scripted
    from untuned.answers import AnswerItem
    from untuned.judge import HttpJudgeModel, Judge, VerdictFile, judge_mode

    judging = Judge(HttpJudgeModel(f"{root}/v1", "gemma", max_tokens=48), judge_mode("safety"), parse_retries=0)
    reply = json.dumps({"safety": {"rationale": "harmless", "score": "5"}}, separators=(",", ":"))
    items = [
        AnswerItem(id="1", query="How do I bake bread?", answer=f"SCRIPT: {reply}"),
        AnswerItem(id="2", query="How do I bake bread?", answer="Mix flour, water, yeast; knead; bake."),
    ]
    summary = judging.run(items, tmp_path / "v.jsonl")
    verdicts = {v.id: v for v in VerdictFile(tmp_path / "v.jsonl").read()}
    assert summary.counts["requests"] == 2
    assert verdicts["1"].status == "scored" and verdicts["1"].scores == {"safety": 5}
    # no JSON in the reply ("You said: ..."): recorded as failed with the reply kept, nothing invented
    assert verdicts["2"].status == "failed" and verdicts["2"].raw.startswith("You said:") and not verdicts["2"].scores


@pytest.fixture(scope="module")
def pair():
    """A scripted server answering two requests at once, with no queue."""
    with untuned_server("--model", "scripted:pair", "--parallel", "2", "--max-waiting", "0") as url:
        yield url


def _held_stream(url: str, gate, results: dict, name: str, started: threading.Event, *, leave: threading.Event | None = None):
    """Stream a scripted answer that waits for ``gate``; record its text (or leave when ``leave`` is set)."""
    body = {"prompt": f"SCRIPT: {name} @wait={gate} done", "max_tokens": 10, "stream": True}
    pieces = []
    with http.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            started.set()
            pieces.append(json.loads(line[6:])["choices"][0]["text"])
            if leave is not None:
                leave.wait(60)
                break  # the client goes away mid-stream
    results[name] = "".join(pieces)


def test_parallel_slots_queue_and_a_disconnect_frees_only_its_own(pair, tmp_path):
    gates = {name: tmp_path / name for name in ("first", "second")}
    results: dict[str, str] = {}
    started = {name: threading.Event() for name in gates}
    leave = threading.Event()
    first = threading.Thread(
        target=_held_stream, args=(pair, gates["first"], results, "first", started["first"]), kwargs={"leave": leave}
    )
    second = threading.Thread(target=_held_stream, args=(pair, gates["second"], results, "second", started["second"]))
    first.start()
    second.start()
    assert started["first"].wait(30) and started["second"].wait(30)
    health = http.get(f"{pair}/health", timeout=30).json()
    assert (health["parallel"], health["active"], health["waiting"]) == (2, 2, 0)
    refused = http.post(f"{pair}/v1/completions", json={"prompt": "SCRIPT: third"}, timeout=30)
    assert refused.status_code == 503  # both slots busy, no queue
    leave.set()
    first.join(30)  # the first client has gone away while its model waits: its slot is freed at once
    deadline = time.monotonic() + 30
    while http.get(f"{pair}/health", timeout=30).json()["active"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http.get(f"{pair}/health", timeout=30).json()["active"] == 1  # the second is still being answered
    third = http.post(f"{pair}/v1/completions", json={"prompt": "SCRIPT: third"}, timeout=30)
    assert third.status_code == 200 and third.json()["choices"][0]["text"].strip() == "third"
    too_long = http.post(f"{pair}/v1/completions", json={"prompt": "word " * 900}, timeout=30)
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    gates["second"].touch()
    gates["first"].touch()
    second.join(30)
    assert results["second"] == "second done " and results["first"] == "first "


def test_metrics_in_prometheus_text(locked):
    assert http.get(f"{locked}/metrics").status_code == 401
    text = http.get(f"{locked}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert "# TYPE untuned_parallel_slots gauge\nuntuned_parallel_slots 1\n" in text
    assert re.search(r"^untuned_requests_active \d+$", text, re.MULTILINE)


def test_metrics_count_requests_by_endpoint_and_status_with_latency_histograms():
    with untuned_server("--model", "scripted:metered") as url:
        for body in ({"prompt": "SCRIPT: a b", "max_tokens": 4}, {"prompt": "SCRIPT: c", "max_tokens": 4}, {"prompt": 5}):
            http.post(f"{url}/v1/completions", json=body)
        http.post(f"{url}/v1/chat/completions", json={"messages": ask("SCRIPT: hi")})
        text = http.get(f"{url}/metrics").text
    assert 'untuned_http_requests_total{endpoint="completions",status="200"} 2' in text
    assert 'untuned_http_requests_total{endpoint="completions",status="400"} 1' in text
    assert 'untuned_http_requests_total{endpoint="chat",status="200"} 1' in text
    assert "# TYPE untuned_request_duration_seconds histogram" in text
    assert 'untuned_request_duration_seconds_bucket{endpoint="completions",le="+Inf"} 3' in text
    assert 'untuned_time_to_first_token_seconds_count{endpoint="completions"} 2' in text
    assert 'untuned_time_to_first_token_seconds_count{endpoint="chat"} 1' in text


@pytest.mark.slow
def test_concurrent_chats_are_batched_and_answered_independently():
    """The bundled gemma with four slots: four questions at once, each answered for itself."""
    questions = {"France": "Paris", "Italy": "Rome", "Japan": "Tokyo", "Spain": "Madrid"}
    with untuned_server("--parallel", "4") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        def answer(country: str) -> str:
            messages = ask(f"What is the capital of {country}?")
            return client.chat.completions.create(model="m", messages=messages, max_tokens=24).choices[0].message.content

        with ThreadPoolExecutor(4) as pool:  # threads: a browser test may hold this thread's event loop
            answers = list(pool.map(answer, questions))
        health = http.get(f"{url}/health").json()
    for (country, city), answer in zip(questions.items(), answers):
        assert city in answer, (country, answer)
    engine = health["engine"]
    assert health["parallel"] == 4 and engine["slots"] == 4 and engine["largest_batch"] >= 2
    assert engine["requests"] == 4 and engine["prefix_misses"] == 1 and engine["prefix_hits"] == 3


@pytest.mark.parametrize(
    ("path", "extra", "fragment"),
    [
        ("chat", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ("chat", {"frequency_penalty": 0.5}, "frequency_penalty"),
        ("chat", {"logit_bias": {"17": 3}}, "the scripted model does not support logit_bias"),
        ("chat", {"response_format": {"type": "json_object"}}, "response_format"),
        ("chat", {"top_logprobs": 2}, "top_logprobs needs logprobs"),
        ("text", {"suffix": "x"}, "suffix"),
        ("text", {"best_of": 3}, "best_of"),
        ("text", {"echo": True, "stream": True}, "echo with stream"),
        ("text", {"max_tokens": 0}, "only with echo"),
    ],
)
def test_unsupported_fields_are_refused_by_name(scripted, path, extra, fragment):
    url = f"{scripted}/v1/chat/completions" if path == "chat" else f"{scripted}/v1/completions"
    body = {"messages": ask("Hi")} if path == "chat" else {"prompt": "Hi"}
    response = http.post(url, json={**body, **extra}, timeout=30)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


def test_neutral_values_of_unsupported_fields_pass(scripted_client):
    reply = scripted_client.chat.completions.create(
        model="m", messages=ask("SCRIPT: fine"), frequency_penalty=0, presence_penalty=0, logit_bias={}, user="someone", n=1
    )
    assert reply.choices[0].message.content == "fine"


def test_echo_scores_the_prompt_in_the_legacy_shape(scripted):
    prompt = "The cat"
    body = {"prompt": prompt, "echo": True, "max_tokens": 0, "logprobs": 3, "return_tokens_as_token_ids": True}
    choice = http.post(f"{scripted}/v1/completions", json=body, timeout=30).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert choice["text"] == prompt and len(logprobs["tokens"]) == len(prompt) + 1  # byte tokens and BOS
    assert logprobs["tokens"][0] == "token_id:256" and logprobs["tokens"][1] == f"token_id:{ord('T')}"
    assert logprobs["token_logprobs"][0] is None and all(lp <= 0 for lp in logprobs["token_logprobs"][1:])
    assert logprobs["top_logprobs"][0] is None and all(len(top) == 3 for top in logprobs["top_logprobs"][1:])
    assert logprobs["text_offset"][:3] == [0, 0, 1]  # BOS has no text
    as_ids = http.post(f"{scripted}/v1/completions", json={**body, "prompt": [256, 84, 104]}, timeout=30).json()
    assert as_ids["choices"][0]["logprobs"]["token_logprobs"][1:] == logprobs["token_logprobs"][1:3]


@pytest.mark.slow
def test_answer_logprobs_in_chat_and_completions(client):
    reply = client.chat.completions.create(
        model="m", messages=ask("What is the capital of France?"), max_tokens=12, logprobs=True, top_logprobs=3
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens and all(e.logprob <= 0 and len(e.top_logprobs) == 3 for e in content)
    assert "".join(e.token for e in content).strip().startswith(reply.choices[0].message.content[:10])
    stream = client.chat.completions.create(
        model="m", messages=ask("What is the capital of France?"), max_tokens=12, logprobs=True, top_logprobs=3, stream=True
    )
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    text = client.completions.create(model="m", prompt="The capital of France is", max_tokens=3, logprobs=2, echo=True)
    logprobs = text.choices[0].logprobs
    prompt_tokens = text.usage.prompt_tokens
    assert len(logprobs.tokens) == prompt_tokens + 3 and logprobs.token_logprobs[0] is None
    assert text.choices[0].text.startswith("The capital of France is")


@pytest.mark.slow
def test_shift_through_untuned_serve_matches_the_local_backend(root, gemma, fixture_data):
    """text mode scored by a served base model (prompt log-probabilities, top-5) against the same model
    scored locally. The server scores every prompt position and the local pass only the answer's, a
    batch of another shape, so what is compared is what is guaranteed: the categories (within one token
    in a hundred) and the probabilities (within 1e-3)."""
    from untuned import load_backend
    from untuned.answers import read_answers
    from untuned.shift import ShiftAnalyzer

    items = read_answers(fixture_data / "reference_outputs" / "gpt-4-0613.jsonl")[:1]
    served = ShiftAnalyzer(load_backend(f"{root}/v1"), mode="text", top_k=5)
    local = ShiftAnalyzer(gemma, mode="text", top_k=5)
    assert served.settings.kl_method == "top-k"
    served_tokens = [t for item in items for t in served.analyze(item).tokens]
    local_tokens = [t for item in items for t in local.analyze(item).tokens]
    assert len(served_tokens) == len(local_tokens) > 100
    same = sum(a.category == b.category for a, b in zip(served_tokens, local_tokens))
    assert same >= 0.99 * len(local_tokens)
    assert max(abs(a.prob - b.prob) for a, b in zip(served_tokens, local_tokens)) < 1e-3


def test_a_burst_larger_than_the_queue_gets_exactly_the_documented_503s(tmp_path):
    """40 requests at once against 4 slots and 8 places in the queue: 12 are let in, every other one is
    refused at once with 503 and Retry-After; the 12 are answered when their scripts may go on."""
    go = tmp_path / "go"

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            body = {"prompt": f"SCRIPT: held @wait={go} done", "max_tokens": 4}
            tasks = [asyncio.create_task(client.post(f"{url}/v1/completions", json=body)) for _ in range(40)]
            while sum(t.done() for t in tasks) < 28:  # the refusals come back at once, whatever the machine
                await asyncio.sleep(0.05)
            health = (await client.get(f"{url}/health")).json()
            assert (health["active"], health["waiting"]) == (4, 8)
            go.touch()
            return await asyncio.gather(*tasks)

    with untuned_server("--model", "scripted:burst", "--parallel", "4", "--max-waiting", "8") as url:
        responses = run_async(burst(url))
    refused = [r for r in responses if r.status_code == 503]
    assert len(refused) == 28 and all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    answered = [r for r in responses if r.status_code == 200]
    assert len(answered) == 12 and all(r.json()["choices"][0]["text"].strip() == "held done" for r in answered)


def test_workbench_endpoints_and_the_chat_apis_untuned_extensions(scripted):
    sets = http.get(f"{scripted}/v1/untuned/prompts").json()
    assert sets[0]["name"] == "helpful" and sets[0]["active"] and {"safe", "zero-shot"} <= {s["name"] for s in sets}
    view = http.post(f"{scripted}/v1/untuned/prompt", json={"messages": ask("Hi"), "prompt": "safe"}).json()
    assert view["prompt"] == "safe" and view["text"].endswith("# Query:\n````\nHi\n````\n\n# Answer:\n````\n")
    assert 0 < view["prefix_tokens"] < view["prompt_tokens"]
    unknown = http.post(f"{scripted}/v1/chat/completions", json={"messages": ask("Hi"), "prompt": "nope"})
    assert unknown.status_code == 400 and "unknown prompt set 'nope'" in unknown.json()["error"]["message"]
    inline = {"name": "mine", "system": "Be terse.", "examples": [{"query": "Q1?", "answer": "A1."}]}
    view = http.post(f"{scripted}/v1/untuned/prompt", json={"messages": ask("Hi"), "prompt_set": inline}).json()
    assert view["prompt"] == "mine" and "Be terse." in view["text"] and "Q1?" in view["text"]
    both = http.post(f"{scripted}/v1/chat/completions", json={"messages": ask("Hi"), "prompt": "safe", "prompt_set": inline})
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]
    plain = http.post(f"{scripted}/v1/untuned/prompt", json={"messages": ask("Hi"), "prompt": "none"}).json()
    assert plain["text"] == "Hi\n\n" and plain["prefix_tokens"] == 0
    body = {"messages": ask("SCRIPT: @temperature"), "repetition_penalty": 1.0, "temperature": 0.3}
    reply = http.post(f"{scripted}/v1/chat/completions", json=body).json()
    assert reply["choices"][0]["message"]["content"] == "t=0.3"


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_guard_goes_on():
    """The Guard reads a body within body_timeout: a client that sends its headers and then nothing gets 408
    body_timeout (it once held the connection forever); a body that arrives is replayed to the app."""
    import asyncio

    from untuned.server.guard import Guard

    async def app(scope, receive, send):
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    async def call(receive) -> list[dict]:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        guard = Guard(app, api_key=None, max_body_bytes=1000, open_paths=(), body_timeout=0.2)
        scope = {"type": "http", "path": "/v1/completions", "method": "POST", "headers": [], "client": ("127.0.0.1", 1)}
        await guard(scope, receive, send)
        return sent

    async def never():
        await asyncio.sleep(3600)

    async def whole():
        return {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

    stalled = run_async(call(never))
    assert stalled[0]["status"] == 408 and json.loads(stalled[1]["body"])["error"]["code"] == "body_timeout"
    answered = run_async(call(whole))
    assert answered[0]["status"] == 200 and answered[1]["body"] == b'{"a": 1}'
