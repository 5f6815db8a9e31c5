"""Nothing a client sends can stop the server (issue 26; docs/faults.md is the table of these faults).

Each request that once took the whole process down is answered with a 4xx while the server stays up,
the engine's process never restarting for it (the checks stopped it before llama.cpp); a native crash
that does happen (the scripted model's ``@abort``) costs only the requests in flight; cancellation
reaches a request in every state; /health tells a stalled or restarting engine from a working one; the
server answers only under its own names."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import http
from helpers.servers import run_schemathesis, untuned_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from untuned.conversation import RenderedPrompt

TIMEOUT = 120  # seconds for any one HTTP call: generous, the machine may be slow and busy
NUL_PATTERN = {"type": "string", "pattern": "^[\\x00]$"}  # only a JSON escape can spell it
TOOL_NUL = {"type": "object", "properties": {"a": NUL_PATTERN}, "required": ["a"]}
TOOL_HUGE = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^a{1000000000000}$"}}, "required": ["a"]}


def tool(parameters: dict) -> dict:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


ASK = [{"role": "user", "content": "Call f."}]
CRASHES = [  # (path, body or raw bytes, what the refusal names): each ended the process, or a request, once
    ("/detokenize", {"tokens": [1_000_000]}, "outside the model's vocabulary"),
    (
        "/v1/completions",
        {"prompt": "A list:", "max_tokens": 8, "ignore_eos": True, "response_format": {"type": "json_object"}},
        "ignore_eos cannot go with a JSON response_format",
    ),
    ("/v1/completions", {"prompt": [2, 262_144], "max_tokens": 4}, "outside the model's vocabulary"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 4, "logit_bias": {"262144": 5}}, "logit_bias: token id 262144"),
    # issue 35's: a pattern whose repetition count was expanded before any size check (a MemoryError, a 500)
    ("/v1/chat/completions", {"messages": ASK, "tools": [tool(TOOL_HUGE)], "tool_choice": "required"}, "a repetition of"),
    (
        "/v1/chat/completions",
        {"messages": ASK, "response_format": {"type": "json_schema", "json_schema": {"name": "h", "schema": TOOL_HUGE}}},
        "a repetition of",
    ),
    # echo past the window: a ContextOverflowError that was a 500
    ("/v1/completions", {"prompt": "word " * 9000, "max_tokens": 0, "echo": True, "logprobs": 1}, "over this model's context"),
    # lone surrogates (UnicodeEncodeError, three 500s)
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 4}', "messages.0.content"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "\\ud800"}', "max_tokens"),
    ("/tokenize", b'{"prompt": "a\\udc00b"}', "prompt: the text holds a lone UTF-16 surrogate"),
]
ANSWERED = [  # issue 35's requests that aborted llama.cpp and now have an answer the constraint allows
    {
        "messages": ASK,
        "max_tokens": 8,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": NUL_PATTERN}},
    },
    {"messages": ASK, "max_tokens": 12, "tools": [tool(TOOL_NUL)], "tool_choice": "required"},
    {"messages": ASK, "max_tokens": 8, "temperature": 1e-44, "response_format": {"type": "json_object"}},
]


def post(url: str, path: str, body: dict | bytes, **extra) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"}
        return http.post(f"{url}{path}", content=body, headers=headers, timeout=TIMEOUT, **extra)
    return http.post(f"{url}{path}", json=body, timeout=TIMEOUT, **extra)


def plain_request_answers(url: str) -> bool:
    reply = post(url, "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})
    return reply.status_code == 200 and bool(reply.json()["choices"][0]["text"])


def health(url: str) -> dict:
    return http.get(f"{url}/health", timeout=TIMEOUT).json()


def wait_for(check, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def gemma_server():
    with untuned_server("--parallel", "4") as url:
        yield url


@pytest.fixture(scope="module")
def crashy():
    """The scripted model in a supervised engine process, four at once; ``@abort`` kills that process."""
    with untuned_server("--model", "scripted:crashy", "--parallel", "4", "--stall-after", "1") as url:
        yield url


@pytest.mark.slow
def test_each_request_that_ended_the_process_is_refused_and_the_server_answers_after_it(gemma_server):
    url = gemma_server
    for path, body, named in CRASHES:
        reply = post(url, path, body)
        assert reply.status_code == 400, (path, reply.text)
        assert named in reply.json()["error"]["message"], reply.json()
        assert plain_request_answers(url)
    for body in ANSWERED:  # the constraint holds the answer: '"\\u0000"', a call whose a is that, JSON greedily
        reply = post(url, "/v1/chat/completions", body)
        assert reply.status_code == 200, reply.text
        message = reply.json()["choices"][0]["message"]
        if message["content"] == '"\\u0000"' or message.get("tool_calls"):
            continue
        assert message["content"].startswith("{"), message
    process = health(url)["engine_process"]
    assert process["state"] == "running" and process["restarts"] == 0  # stopped before llama.cpp, not survived


@pytest.mark.slow
def test_a_stream_beside_ten_requests_that_aborted_the_engine_finishes_whole(gemma_server):
    """Issue 35's third case: ten requests whose grammar once aborted llama.cpp, one after another, while
    another client streams 300 tokens: the stream ends with its 300 tokens, the engine never restarted."""
    url, out, started = gemma_server, {}, threading.Event()
    before = health(url)["engine_process"]["restarts"]
    body = {"prompt": "Count: one, two,", "max_tokens": 300, "ignore_eos": True, "stream": True, "temperature": 0}  # 300 exactly
    streamer = threading.Thread(target=stream_body, args=(url, body, started, out))
    streamer.start()
    assert started.wait(TIMEOUT)
    for index in range(10):
        reply = post(url, "/v1/chat/completions", {**ANSWERED[index % 2], "max_tokens": 6})
        assert reply.status_code in (200, 400), reply.text
    streamer.join(TIMEOUT * 3)
    chunks = out["chunks"]
    assert "error" not in chunks[-1] and chunks[-1]["choices"][0]["finish_reason"] == "length", chunks[-1]
    assert out["usage"]["completion_tokens"] == 300
    assert health(url)["engine_process"]["restarts"] == before


def stream_body(url: str, body: dict, started: threading.Event, out: dict) -> None:
    chunks = []
    with http.stream(
        "POST", f"{url}/v1/completions", json={**body, "stream_options": {"include_usage": True}}, timeout=TIMEOUT
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    out["usage"] = chunk["usage"]
                if chunk.get("choices") or "error" in chunk:
                    chunks.append(chunk)
                    started.set()
    out["chunks"] = chunks


@pytest.mark.slow
def test_health_answers_at_once_while_long_tokenizations_run():
    """Issue 35's seventh case, smaller: 24 /tokenize requests of a text llama.cpp splits slowly (runs of
    spaces) wait at the prep gate, off the event loop; /health answers within a second all along."""
    with untuned_server("--parallel", "1") as url:
        text = "x  " * 20_000
        with ThreadPoolExecutor(24) as pool:
            replies = [pool.submit(post, url, "/tokenize", {"prompt": text}) for _ in range(24)]
            time.sleep(1.0)
            for _ in range(5):
                started = time.monotonic()
                reply = http.get(f"{url}/health", timeout=TIMEOUT)
                assert reply.status_code == 200 and time.monotonic() - started < 1.0
                time.sleep(0.3)
            codes = sorted(r.result().status_code for r in replies)
        assert set(codes) <= {200, 503} and codes.count(200) >= 18, codes  # 2 at once + 16 waiting; the rest told to retry


def test_schemas_past_the_bounds_are_a_400_before_the_request_waits(gemma_server):
    """A schema nested too deep or with a count past 100,000 is named, never a 500; Field(max_length=5000)
    and an enum of 16,000 strings compile (bounded repetition is a lexer state in llguidance)."""
    nested: dict = {"type": "string"}
    for _ in range(40):
        nested = {"type": "array", "items": nested}
    for schema, named in ((nested, "nested deeper than 32"), ({"type": "array", "maxItems": 10**6}, "maxItems: 1000000")):
        body = {"prompt": "x", "max_tokens": 2, "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
        reply = post(gemma_server, "/v1/completions", body)
        assert reply.status_code == 400 and named in reply.json()["error"]["message"], reply.text
    many = {"enum": [f"word{i}" for i in range(16_000)]}
    for fine in ({"type": "object", "properties": {"name": {"type": "string", "maxLength": 5000}}, "required": ["name"]}, many):
        body = {"prompt": "x", "max_tokens": 4, "response_format": {"type": "json_schema", "json_schema": {"schema": fine}}}
        assert post(gemma_server, "/v1/completions", body).status_code == 200


def test_n_beyond_what_the_server_admits_is_a_400_that_says_why(gemma_server):
    reply = post(gemma_server, "/v1/completions", {"prompt": "x", "max_tokens": 2, "n": 16})
    assert reply.status_code == 200  # 4 at once + 16 waiting = 20 admitted
    with untuned_server("--model", "scripted:narrow", "--parallel", "2", "--max-waiting", "3") as url:
        reply = post(url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "n": 6})
        assert reply.status_code == 400, reply.text
        assert "n: 6 choices are more than this server ever admits at once (2 answered at once + 3 waiting = 5)" in reply.text
        assert post(url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "n": 5}).status_code == 200


@pytest.mark.slow
def test_a_kv_budget_off_the_block_size_refuses_what_cannot_fit_and_answers_the_rest():
    """--kv-budget 3000 is a pool of 3072 cells (llama.cpp's blocks of 256): a request that can never fit is
    refused at once with its numbers, and the small request after it is answered (it used to wait forever)."""
    with untuned_server("--parallel", "2", "--kv-budget", "3000") as url:
        big = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2900}
        started = time.monotonic()
        reply = post(url, "/v1/chat/completions", big)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "context_length_exceeded"
        assert "context window of 3072 tokens" in reply.json()["error"]["message"]
        assert time.monotonic() - started < 60  # refused, not queued behind nothing
        small = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16}
        assert post(url, "/v1/chat/completions", small).status_code == 200
        assert health(url)["engine"]["waiting"] == 0


def stream_until_done(url: str, prompt: str, started: threading.Event, out: dict) -> None:
    body = {"prompt": prompt, "max_tokens": 400, "stream": True}
    events = []
    with http.stream("POST", f"{url}/v1/completions", json=body, timeout=TIMEOUT) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
                started.set()
    out[prompt] = events


def test_an_engine_that_aborts_during_three_streams_is_restarted_and_the_server_answers(crashy):
    """The scripted model calls os.abort() in the engine's process while three streams run: the streams (which
    had sent tokens) end with an error event that says the engine restarted; the aborting request, one of four
    suspects and nothing sent yet, is run again alone, aborts again and gets a 503; sent once more, it is
    refused (400) without reaching the engine; /health shows both restarts by cause; later requests are answered."""
    url = crashy
    before = health(url)["engine_process"]
    results: dict = {}
    events = [threading.Event() for _ in range(3)]
    prompts = [f"SCRIPT: s{i} @delay=0.05 @repeat=300:tick" for i in range(3)]
    threads = [threading.Thread(target=stream_until_done, args=(url, p, e, results)) for p, e in zip(prompts, events)]
    for thread in threads:
        thread.start()
    assert all(e.wait(TIMEOUT) for e in events)
    boom = {"prompt": "SCRIPT: boom @abort", "max_tokens": 4}
    crash = post(url, "/v1/completions", boom)
    for thread in threads:
        thread.join(TIMEOUT)
    assert crash.status_code == 503 and crash.json()["error"]["code"] == "engine_restarted", crash.text
    assert "signal SIGABRT" in crash.json()["error"]["message"]
    for prompt in prompts:
        last = results[prompt][-1]
        assert last["error"]["code"] == "engine_restarted", last
    assert wait_for(lambda: health(url)["engine_process"]["state"] == "running")
    after = health(url)
    assert after["status"] == "ok" and after["engine_process"]["restarts"] == before["restarts"] + 2
    assert after["engine_process"]["last_exit"] == "signal SIGABRT" and after["engine_process"]["pid"] != before["pid"]
    assert after["engine_process"]["crashes"]["signal SIGABRT"] == before["crashes"].get("signal SIGABRT", 0) + 2
    again = post(url, "/v1/completions", boom)
    assert again.status_code == 400 and again.json()["error"]["code"] == "crashed_the_engine", again.text
    assert "ended the engine's process (signal SIGABRT)" in again.json()["error"]["message"]
    guard = health(url)
    assert guard["engine_process"]["restarts"] == after["engine_process"]["restarts"]  # refused before the engine
    assert guard["crash_guard"]["blocked_requests"] >= 1 and guard["crash_guard"]["refused"] >= 1
    replies = [post(url, "/v1/completions", {"prompt": f"SCRIPT: fine {i}", "max_tokens": 4}) for i in range(3)]
    assert [r.json()["choices"][0]["text"] for r in replies] == ["fine 0 ", "fine 1 ", "fine 2 "]
    assert "untuned_engine_crashes_total" in http.get(f"{url}/metrics", timeout=TIMEOUT).text


@pytest.mark.slow
def test_an_engine_killed_from_outside_restarts_and_the_request_in_flight_is_answered():
    """kill -9 of the engine's process (the operator, or the out-of-memory killer) is nobody's request: the
    engine restarts, the whole answer that was being made is made again transparently (nothing had been sent),
    and nothing is blocked."""
    import os
    import signal

    with untuned_server("--model", "scripted:killed", "--parallel", "2") as url:
        first = health(url)["engine_process"]
        out: dict = {}
        slow = threading.Thread(
            target=lambda: out.update(reply=post(url, "/v1/completions", {"prompt": "SCRIPT: a @delay=0.2 @repeat=20:b"}))
        )
        slow.start()
        assert wait_for(lambda: health(url)["active"] == 1)
        time.sleep(0.5)
        os.kill(first["pid"], signal.SIGKILL)
        slow.join(TIMEOUT)
        assert out["reply"].status_code == 200 and out["reply"].json()["choices"][0]["text"].startswith("a b"), out["reply"].text
        after = health(url)
        assert after["engine_process"]["restarts"] == 1 and after["engine_process"]["crashes"] == {"signal SIGKILL": 1}
        assert after["crash_guard"]["blocked_requests"] == 0 and after["crash_guard"]["retried"] == 1


@pytest.mark.slow
def test_a_client_whose_requests_keep_ending_the_engine_gets_429():
    """Three different bodies that each abort the engine alone: each is blocked after its crash, and the client
    is charged; the fourth request from that client, harmless or not, gets 429 with Retry-After."""
    with untuned_server("--model", "scripted:loop", "--parallel", "1") as url:
        for index in range(3):
            reply = post(url, "/v1/completions", {"prompt": f"SCRIPT: boom{index} @abort", "max_tokens": 2})
            assert reply.status_code == 503, reply.text
            assert wait_for(lambda: health(url)["engine_process"]["state"] == "running")
        refused = post(url, "/v1/completions", {"prompt": "SCRIPT: harmless", "max_tokens": 2})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_crashes", refused.text
        assert int(refused.headers["retry-after"]) > 0
        report = health(url)
        assert report["engine_process"]["restarts"] == 3 and report["crash_guard"]["blocked_clients"] == 1


def test_health_calls_an_engine_with_work_and_no_progress_stalled(crashy, tmp_path):
    url, gate = crashy, tmp_path / "go"
    held = threading.Thread(target=post, args=(url, "/v1/completions", {"prompt": f"SCRIPT: a @wait={gate} b", "max_tokens": 4}))
    held.start()
    assert wait_for(lambda: health(url)["status"] == "stalled")  # --stall-after 1
    reply = http.get(f"{url}/health", timeout=TIMEOUT)
    assert reply.status_code == 503 and "no progress" in reply.json()["problem"]
    assert "untuned_healthy 0" in http.get(f"{url}/metrics", timeout=TIMEOUT).text
    gate.touch()
    held.join(TIMEOUT)
    assert wait_for(lambda: http.get(f"{url}/health", timeout=TIMEOUT).status_code == 200)


def test_a_client_that_leaves_while_queued_gives_its_place_back(tmp_path):
    """One slot, one place in the queue: a queued client that leaves frees the place at once (before, it
    kept counting as admitted until the model reached it, and the next client got a 503)."""
    gate = tmp_path / "go"
    with untuned_server("--model", "scripted:queue", "--parallel", "1", "--max-waiting", "1") as url:
        held = threading.Thread(target=post, args=(url, "/v1/completions", {"prompt": f"SCRIPT: a @wait={gate}"}))
        held.start()
        assert wait_for(lambda: health(url)["active"] == 1)
        with pytest.raises(httpx.ReadTimeout):  # queued behind the held one; the client gives up
            http.post(f"{url}/v1/completions", json={"prompt": "SCRIPT: gone"}, timeout=1.5)
        assert wait_for(lambda: health(url)["waiting"] == 0)
        third: dict = {}
        late = threading.Thread(target=lambda: third.update(reply=post(url, "/v1/completions", {"prompt": "SCRIPT: third"})))
        late.start()
        assert wait_for(lambda: health(url)["waiting"] == 1)  # admitted to wait, not refused
        gate.touch()
        late.join(TIMEOUT)
        held.join(TIMEOUT)
        assert third["reply"].status_code == 200 and third["reply"].json()["choices"][0]["text"] == "third "


def test_the_server_answers_only_under_its_own_names():
    with untuned_server("--model", "scripted:hosts", "--allow-host", "box.lan", "--cors", "http://page.example") as url:
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "box.lan", f"[::1]:{port}"):
            assert http.get(f"{url}/v1/models", headers={"Host": host}, timeout=TIMEOUT).status_code == 200, host
        refused = http.get(f"{url}/v1/models", headers={"Host": "evil.example", "Origin": "http://page.example"}, timeout=TIMEOUT)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "host_not_allowed"
        assert refused.headers["access-control-allow-origin"] == "http://page.example"  # CORS on every answer
        big = http.post(
            f"{url}/v1/completions", content=b"x" * 2_000_000, headers={"Origin": "http://page.example"}, timeout=TIMEOUT
        )
        assert big.status_code == 413 and big.headers["access-control-allow-origin"] == "http://page.example"
    with untuned_server("--model", "scripted:keyed", "--api-key", "k", "--cors", "http://page.example") as url:
        denied = http.get(f"{url}/v1/models", headers={"Origin": "http://page.example"}, timeout=TIMEOUT)
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "http://page.example"


# --- the engine itself, in this process ------------------------------------------------------------------


def test_the_native_boundary_refuses_what_llama_cpp_would_abort_on(gemma):
    """Defence in depth: the backend and its engine check every value themselves, whoever calls them."""
    from untuned.backends import Sampling

    with pytest.raises(ValueError, match="outside the vocabulary"):
        gemma.detokenize([1_000_000])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        gemma.piece(-1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        gemma.score([2, 300_000], start=1)
    with pytest.raises(ValueError, match="maxLength: 250000 is over 100000"):
        gemma.check_constraint(json_schema=json.dumps({"type": "string", "maxLength": 250_000}))
    with pytest.raises(ValueError, match="Unimplemented keys"):
        gemma.check_constraint(json_schema=json.dumps({"type": "array", "uniqueItems": True}))
    with pytest.raises(ValueError, match="grammar cannot be enforced"):
        gemma.check_constraint(grammar="start: undefined_rule")
    both = Sampling(max_tokens=4, ignore_eos=True, json_schema=json.dumps({"type": "object"}))
    with pytest.raises(ValueError, match="ignore_eos cannot go with a JSON format"):
        gemma.stream(RenderedPrompt(prefix="", body="x"), both)


def test_compiled_grammars_are_kept_in_a_bounded_cache(gemma):
    from untuned.constraint import COMPILED_KEPT

    for size in range(COMPILED_KEPT + 10):
        gemma.check_constraint(json_schema=json.dumps({"type": "string", "maxLength": size + 1}))
    assert len(gemma.engine.constraints._compiled) == COMPILED_KEPT


def test_greedy_logprobs_with_ignore_eos_are_the_models_own(gemma):
    """Masking the end of generation changes the choice, not the reported distribution: the first token's
    log-probability is the same with and without ignore_eos (it was renormalised without the end token)."""
    from untuned.backends import Sampling

    prompt = RenderedPrompt(prefix="", body="The capital of France is")
    firsts = []
    for ignore in (False, True):
        chunks = [c for c in gemma.stream(prompt, Sampling(max_tokens=2, logprobs=3, ignore_eos=ignore)) if c.logprob]
        firsts.append((chunks[0].logprob.token, chunks[0].logprob.logprob))
    assert firsts[0] == firsts[1]


# --- the API fuzzer, pointed at the real engine ----------------------------------------------------------


@pytest.mark.slow
def test_the_api_fuzzer_reaches_llama_cpp_and_the_engine_never_dies(tmp_path):
    """Schemathesis against the bundled gemma in llama.cpp (small answers): no 5xx, every status and body
    as documented, the ids of /tokenize fed back; the engine's process never restarted, the server alive."""
    with untuned_server("--max-tokens-limit", "4", "--parallel", "2") as url:
        generated = run_schemathesis(url, tmp_path, examples=40)
        report = health(url)
        assert report["status"] == "ok" and report["engine_process"]["restarts"] == 0, report
        assert report["engine"]["generated_tokens"] > 100, report  # requests got past validation, to the engine
        assert plain_request_answers(url)
    assert generated >= 1000


# --- hostile requests and cancellations driven straight into the engine ----------------------------------

REFERENCE = "The capital of France is"


@pytest.fixture(scope="module", params=["own streams", "one pool"])
def engine_backend(request, gemma_path):
    from untuned.backends.llamacpp import LlamaCppBackend

    budget = 2560 if request.param == "one pool" else None
    backend = LlamaCppBackend(gemma_path, n_ctx=2048, slots=3, kv_budget=budget, name="gemma")
    yield backend
    backend.close()


def greedy(backend, text: str, tokens: int = 8) -> str:
    from untuned.backends import Sampling

    return "".join(c.text for c in backend.stream(RenderedPrompt(prefix="", body=text), Sampling(max_tokens=tokens)))


def idle(backend) -> bool:
    stats = backend.stats()
    return stats.busy_slots == 0 and stats.waiting == 0


PATTERNS = st.sampled_from(  # what broke native code: a NUL only an escape spells, counts to expand, nested counts
    ["^[\\x00]$", "^a{1000000000000}$", "^a{100000}$", "(a|b){50}{50}", "^\\d{2,}$", "[", "^(?:x|y)*z$", "^$"]
)
LEAVES = (
    st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "boolean", "number", "null"])})
    | st.fixed_dictionaries({"type": st.just("string"), "maxLength": st.integers(0, 300_000)})
    | st.fixed_dictionaries({"type": st.just("string"), "minLength": st.integers(-3, 3_000)})
    | st.fixed_dictionaries({"type": st.just("string"), "pattern": PATTERNS})
    | st.fixed_dictionaries({"type": st.just("integer"), "minimum": st.integers(-5, 5), "maximum": st.integers(-5, 5)})
    | st.fixed_dictionaries({"enum": st.lists(st.text(max_size=4) | st.integers(), min_size=0, max_size=40)})
    | st.fixed_dictionaries({"const": st.text(max_size=6)})
    | st.just({"$ref": "#/$defs/missing"})
    | st.just({"type": "array", "uniqueItems": True})
)
SCHEMAS = st.recursive(
    LEAVES,
    lambda inner: (
        st.fixed_dictionaries({"type": st.just("array"), "items": inner, "maxItems": st.integers(0, 200_000)})
        | st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(st.sampled_from("abc"), inner, max_size=2)}
        )
        | st.builds(lambda x: {"$defs": {"x": x}, "$ref": "#/$defs/x"}, inner)
        | st.builds(lambda xs: {"anyOf": xs}, st.lists(inner, min_size=1, max_size=3))
    ),
    max_leaves=6,
)
GRAMMARS = st.sampled_from(["start: /[\\x00]/", 'start: %json {"type": "object"}', "start: undefined", 'start: "a"{3}'])


@st.composite
def hostile(draw, vocab: int):
    from untuned.backends import Sampling

    ids = draw(st.lists(st.integers(-3, vocab + 3) | st.sampled_from([0, 1, 2, vocab - 1, vocab]), min_size=0, max_size=6))
    long = draw(st.booleans())
    body = ids + ([2] * draw(st.integers(0, 900)) if long else [])
    schema = draw(st.none() | SCHEMAS.map(json.dumps))
    grammar = draw(st.none() | GRAMMARS) if schema is None else None
    bias = draw(st.lists(st.tuples(st.integers(0, vocab + 3), st.floats(-100, 100)), max_size=2))
    sampling = dict(max_tokens=draw(st.integers(1, 2000)), ignore_eos=draw(st.booleans()), json_schema=schema, grammar=grammar)
    temperature = draw(st.sampled_from([0.0, 1e-44, 5e-324, 1e-7, 0.0009, 0.8, 5.0]))
    try:
        made = Sampling(**sampling, logit_bias=tuple(bias), temperature=temperature)
    except ValueError:
        made = Sampling(max_tokens=4)
    return body, made, draw(st.sampled_from(["never", "at once", "after a token", "after two tokens"]))


def drive(backend, body, sampling, cancel: str) -> str:
    """One hostile request through the engine: refused up front (ValueError, ContextOverflowError), or
    streamed and cancelled where ``cancel`` says, or ended by its own constraint (ConstraintError: no token
    can follow); never anything else."""
    from untuned.errors import ConstraintError, ContextOverflowError

    try:
        stream = backend.stream(RenderedPrompt(prefix="", body="", ids=tuple(body)), sampling)
    except (ValueError, ContextOverflowError) as exc:
        return f"refused: {exc}"
    made = 0
    if cancel == "at once":
        stream.cancel()
    try:
        for chunk in stream:
            made += chunk.tokens
            if (cancel == "after a token" and made >= 1) or (cancel == "after two tokens" and made >= 2):
                stream.cancel()
    except ConstraintError as exc:
        return f"ended by its constraint after {made} tokens: {exc}"
    return f"ended after {made} tokens"


@pytest.mark.slow
def test_hostile_requests_and_cancellations_in_every_state_leave_the_engine_as_it_was(engine_backend):
    """Hypothesis draws ids in and out of the vocabulary, schemas past every bound, logit biases, budgets
    past the window, and a cancellation queued, evaluating or decoding; three such requests run at once.
    Each is refused up front or ends; the engine is idle after each example, and a reference request
    gets the same greedy answer at the end as at the start."""
    backend = engine_backend
    before = greedy(backend, REFERENCE)
    outcomes: list[str] = []

    @settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.lists(hostile(backend.vocab_size), min_size=3, max_size=3))
    def check(requests):
        with ThreadPoolExecutor(3) as pool:
            outcomes.extend(pool.map(lambda r: drive(backend, *r), requests))
        assert wait_for(lambda: idle(backend), 120), backend.stats()

    check()
    assert greedy(backend, REFERENCE) == before
    assert any(o.startswith("refused") for o in outcomes) and any(o.startswith("ended") for o in outcomes), outcomes


def test_a_request_cancelled_while_its_prompt_is_evaluated_frees_its_slot_before_any_token(engine_backend):
    from untuned.backends import Sampling

    backend = engine_backend
    body = [2] + [236743, 1902] * 900  # 1801 tokens: four chunks of 512 evaluated one per engine step
    before = backend.stats()
    stream = backend.stream(RenderedPrompt(prefix="", body="", ids=tuple(body)), Sampling(max_tokens=50))
    next(stream)  # the prompt's size; the request is queued or evaluating
    assert wait_for(lambda: backend.stats().prompt_tokens > before.prompt_tokens, 120)
    stream.cancel()  # after the first chunk: the step under way may evaluate the second, the next ends it
    assert wait_for(lambda: idle(backend), 120)
    assert backend.stats().generated_tokens == before.generated_tokens  # stopped during its prompt
    assert list(stream) == []


def test_logit_bias_changes_the_choice_not_the_reported_distribution(gemma):
    """-100 on the greedy first token makes the model choose another; +100 on a token forces it; the
    log-probability reported is the model's own either way."""
    from untuned.backends import Sampling

    prompt = RenderedPrompt(prefix="", body="The capital of France is")

    def first(**extra):
        chunk = next(c for c in gemma.stream(prompt, Sampling(max_tokens=1, logprobs=1, **extra)) if c.logprob)
        return chunk.logprob

    plain = first()
    banned = first(logit_bias=((plain.token, -100.0),))
    forced = first(logit_bias=((1902, 100.0),))
    assert banned.token != plain.token and forced.token == 1902
    assert banned.logprob < plain.logprob and forced.logprob < 0
    with pytest.raises(ValueError, match="logit_bias: token id 262144 at position 0 is outside the vocabulary"):
        gemma.stream(prompt, Sampling(max_tokens=1, logit_bias=((262_144, 1.0),)))
