"""Hostile and valid requests from several clients at once against the real engine (issue 35): a hypothesis
state machine whose every step sends a hostile request and a valid one side by side, and after each step
checks that the engine never restarted and that the valid request got exactly its answer alone; and a soak
run of the same mix at full concurrency for a bounded time, on loopback."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import http
from helpers.servers import untuned_server
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_faults import ANSWERED, CRASHES, PATTERNS, SCHEMAS

TIMEOUT = 120
VALID = [  # greedy, short: each one's answer alone is the reference
    {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0},
    {"prompt": "Water boils at", "max_tokens": 6, "temperature": 0},
    {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6, "temperature": 0},
]


def path_of(body: dict) -> str:
    return "/v1/chat/completions" if "messages" in body else "/v1/completions"


def send(url: str, path: str, body: dict | bytes):
    if isinstance(body, bytes):
        return http.post(f"{url}{path}", content=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    return http.post(f"{url}{path}", json=body, timeout=TIMEOUT)


def answer(reply) -> str:
    choice = reply.json()["choices"][0]
    return choice["text"] if "text" in choice else choice["message"]["content"]


ASK = [{"role": "user", "content": "Give me JSON."}]
HOSTILE = st.one_of(
    st.sampled_from([(path, body) for path, body, _ in CRASHES]),
    st.sampled_from([("/v1/chat/completions", body) for body in ANSWERED]),
    SCHEMAS.map(
        lambda schema: (
            "/v1/chat/completions",
            {
                "messages": ASK,
                "max_tokens": 8,
                "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
            },
        )
    ),
    st.tuples(PATTERNS, st.sampled_from([0.0, 1e-44, 5e-324, 0.5]), st.sampled_from(["auto", "required"])).map(
        lambda drawn: (
            "/v1/chat/completions",
            {
                "messages": ASK,
                "max_tokens": 8,
                "temperature": drawn[1],
                "tool_choice": drawn[2],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": drawn[0]}}},
                        },
                    }
                ],
            },
        )
    ),
)


@pytest.fixture(scope="module")
def mixed_server():
    with untuned_server("--parallel", "4") as url:
        alone = {index: answer(send(url, path_of(body), body)) for index, body in enumerate(VALID)}
        yield url, alone


def restarts(url: str) -> int:
    return http.get(f"{url}/health", timeout=TIMEOUT).json()["engine_process"]["restarts"]


@pytest.mark.slow
def test_a_state_machine_of_hostile_and_valid_clients_never_restarts_the_engine(mixed_server):
    url, alone = mixed_server

    class Mix(RuleBasedStateMachine):
        @rule(hostile=HOSTILE, valid=st.integers(0, len(VALID) - 1))
        def side_by_side(self, hostile, valid):
            path, body = hostile
            with ThreadPoolExecutor(2) as pool:
                bad = pool.submit(send, url, path, body)
                good = pool.submit(send, url, path_of(VALID[valid]), VALID[valid])
                reply = bad.result()
                assert reply.status_code < 500, (path, body if isinstance(body, bytes) else json.dumps(body)[:300], reply.text)
                assert answer(good.result()) == alone[valid]

        @invariant()
        def the_engine_never_restarted(self):
            assert restarts(url) == 0

    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        Mix, settings=settings(max_examples=8, stateful_step_count=4, deadline=None, suppress_health_check=list(HealthCheck))
    )


@pytest.mark.slow
def test_a_soak_of_the_mix_at_full_concurrency(mixed_server):
    """Eight clients for 60 s (loopback): each sends hostile and valid requests in turn; no 5xx, every valid
    answer its answer alone, the engine never restarted, /health ok at the end."""
    url, alone = mixed_server
    cases = [(path, body) for path, body, _ in CRASHES] + [("/v1/chat/completions", body) for body in ANSWERED]
    stop, problems, counts = time.monotonic() + 60, [], {"valid": 0, "hostile": 0}
    lock = threading.Lock()

    def client(number: int) -> None:
        turn = number
        while time.monotonic() < stop:
            path, body = cases[turn % len(cases)]
            reply = send(url, path, body)
            valid = VALID[turn % len(VALID)]
            good = send(url, path_of(valid), valid)
            with lock:
                counts["hostile"] += 1
                counts["valid"] += 1
                if reply.status_code >= 500:
                    problems.append((path, reply.status_code, reply.text[:200]))
                if answer(good) != alone[turn % len(VALID)]:
                    problems.append(("valid", turn % len(VALID), answer(good)))
            turn += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    assert problems == [], problems
    assert counts["valid"] >= 16, counts
    report = http.get(f"{url}/health", timeout=TIMEOUT).json()
    assert report["status"] == "ok" and report["engine_process"]["restarts"] == 0, report
