"""The OpenAI surface real clients use, with the real ``openai`` client against ``untuned serve`` on the
bundled gemma base: structured output (LangChain's ``with_structured_output`` and the client's
``parse`` send these requests), the completion prompt forms LangChain sends, tools' neutral values,
text parts, and several choices from one prompt."""

from __future__ import annotations

import json

import openai
import pytest
from helpers import http
from helpers.servers import untuned_server
from pydantic import BaseModel, Field

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url():
    with untuned_server("--parallel", "4") as root:
        yield root


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


class City(BaseModel):
    city: str
    country: str


def test_json_schema_output_follows_the_schema(client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="any",
        messages=ask("Which city is the capital of France?"),
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    found = json.loads(reply.choices[0].message.content)
    assert set(found) == {"city", "country"} and all(isinstance(v, str) for v in found.values())


def test_the_clients_parse_gets_a_typed_answer(client):
    """openai's ``chat.completions.parse`` (what LangChain's with_structured_output does with
    method='json_schema'): a pydantic model's strict schema, read back into the model."""
    reply = client.chat.completions.parse(
        model="any", messages=ask("Name a city and its country."), max_tokens=60, response_format=City
    )
    assert isinstance(reply.choices[0].message.parsed, City)


def test_json_object_output_is_a_json_object(client):
    reply = client.chat.completions.create(
        model="any", messages=ask("Describe Paris as JSON."), max_tokens=48, response_format={"type": "json_object"}
    )
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:  # cut by max_tokens: still the start of an object
        assert reply.choices[0].message.content.lstrip().startswith("{")


def test_schemas_the_grammar_cannot_enforce_are_refused_by_name(client):
    for schema, named in (
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
        ({"type": "string", "format": "postcode"}, "postcode"),
        ({"type": "string", "maxLength": 10**9}, "maxLength"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "Unsatisfiable schema: minLength"),  # no output matches
    ):
        with pytest.raises(openai.BadRequestError, match=named):
            client.chat.completions.create(
                model="any",
                messages=ask("x"),
                max_tokens=4,
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            )


class Note(BaseModel):
    """A schema as real code writes it: pydantic's Field(max_length=5000) and bounds on a number."""

    title: str = Field(max_length=5000)
    stars: int = Field(ge=3, le=5)


def test_real_schemas_with_large_bounds_and_numeric_ranges_are_enforced(client):
    """Field(max_length=5000) (refused before: the GBNF spelled the bound out) and minimum/maximum (ignored
    before: the converter dropped them) through openai's parse."""
    reply = client.chat.completions.parse(
        model="any", messages=ask("Rate the film Casablanca."), max_tokens=60, response_format=Note, temperature=0
    )
    note = reply.choices[0].message.parsed
    assert isinstance(note, Note) and 3 <= note.stars <= 5


def test_completion_prompt_forms_langchain_sends(client):
    plain = client.completions.create(model="any", prompt="The capital of France is", max_tokens=8, temperature=0)
    listed = client.completions.create(model="any", prompt=["The capital of France is"], max_tokens=8, temperature=0)
    assert listed.choices[0].text == plain.choices[0].text and len(listed.choices) == 1
    both = client.completions.create(
        model="any", prompt=["The capital of France is", "Water boils at"], max_tokens=8, temperature=0, n=2, seed=3
    )
    alone = client.completions.create(model="any", prompt="Water boils at", max_tokens=8, temperature=0)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]  # prompt i's j-th choice is i * n + j
    assert [c.text for c in both.choices] == [plain.choices[0].text] * 2 + [alone.choices[0].text] * 2
    assert both.usage.prompt_tokens == plain.usage.prompt_tokens + alone.usage.prompt_tokens
    ids = client.completions.create(model="any", prompt=[[2, 651], [2, 818]], max_tokens=2, temperature=0)
    assert len(ids.choices) == 2
    with pytest.raises(openai.BadRequestError, match="answered whole"):
        client.completions.create(model="any", prompt=["a", "b"], max_tokens=2, stream=True)
    with pytest.raises(openai.BadRequestError, match="more than this server ever admits"):
        client.completions.create(model="any", prompt=["a"] * 40, max_tokens=2, n=2)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tools_neutral_values_pass(client):
    reply = client.chat.completions.create(
        model="any", messages=ask("Hi"), max_tokens=4, tools=[], tool_choice="none", parallel_tool_calls=False
    )
    assert reply.choices[0].message.content


def test_a_required_tool_call_follows_the_tool_schema(client):
    """The protocol and the schema, not the 270M model's judgment: a required call is one call to an offered
    tool whose arguments are JSON matching that tool's schema."""
    import jsonschema

    reply = client.chat.completions.create(
        model="any", messages=ask("What's the weather in Lyon?"), tools=[WEATHER, CLOCK], tool_choice="required", max_tokens=64
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    tool = {"get_weather": WEATHER, "get_time": CLOCK}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    named = client.chat.completions.create(
        model="any",
        messages=ask("What's the weather in Lyon?"),
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=64,
    )
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"


def test_a_tool_result_is_answered_in_words_and_auto_may_answer_in_text(client):
    first = client.chat.completions.create(
        model="any", messages=ask("What's the weather in Lyon?"), tools=[WEATHER], tool_choice="required", max_tokens=64
    )
    call = first.choices[0].message.tool_calls[0]
    follow = [
        *ask("What's the weather in Lyon?"),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "sunny"}'},
    ]
    answer = client.chat.completions.create(model="any", messages=follow, tools=[WEATHER], tool_choice="none", max_tokens=48)
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content
    auto = client.chat.completions.create(model="any", messages=ask("Say hello."), tools=[WEATHER], max_tokens=24)
    message = auto.choices[0].message
    assert (message.content is None) == bool(message.tool_calls)  # one or the other, never both or neither


def test_tool_calls_stream_as_openai_streams_them(client):
    stream = client.chat.completions.create(
        model="any", messages=ask("Weather in Oslo?"), tools=[WEATHER], tool_choice="required", max_tokens=64, stream=True
    )
    chunks = list(stream)
    calls = [call for chunk in chunks if chunk.choices for call in (chunk.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_bad_tools_are_refused_by_name(client, url):
    with pytest.raises(openai.BadRequestError, match="only function tools"):
        client.chat.completions.create(model="any", messages=ask("x"), tools=[{"type": "code_interpreter"}], max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.chat.completions.create(
            model="any", messages=ask("x"), tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    forced = http.post(f"{url}/v1/chat/completions", json={"messages": ask("x"), "tool_choice": "required"})
    assert forced.status_code == 400 and "no tools were sent" in forced.json()["error"]["message"]


def test_langchain_batch_bind_tools_and_structured_output(url):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI, OpenAI

    llm = OpenAI(base_url=f"{url}/v1", api_key="unused", model="any", max_tokens=8, temperature=0, max_retries=0)
    assert len(llm.batch(["The capital of France is", "Water boils at"])) == 2

    @tool
    def get_weather(city: str) -> str:
        """The weather now in a city."""
        return "sunny"

    chat = ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="any", max_tokens=64, temperature=0, max_retries=0)
    called = chat.bind_tools([get_weather], tool_choice="get_weather").invoke("What's the weather in Paris?")
    assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather" and "city" in called.tool_calls[0]["args"]
    found = chat.with_structured_output(City, method="function_calling").invoke("Paris is the capital of which country?")
    assert isinstance(found, City)


def test_text_parts_are_read_and_image_parts_refused(client):
    parts = [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": " of France?"}]
    whole = client.chat.completions.create(model="any", messages=ask("What is the capital of France?"), max_tokens=12)
    split = client.chat.completions.create(model="any", messages=[{"role": "user", "content": parts}], max_tokens=12)
    assert split.choices[0].message.content == whole.choices[0].message.content
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(openai.BadRequestError, match="text parts only"):
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": image}], max_tokens=4)


def test_n_choices_from_one_prompt_each_with_its_seed(client):
    question = ask("Write one sentence about the sea.")
    reply = client.chat.completions.create(model="any", messages=question, max_tokens=16, n=3, temperature=1.0, seed=5)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2] and len(set(texts)) > 1
    # choice i is what a single request with seed 5 + i answers
    for i, text in enumerate(texts):
        alone = client.chat.completions.create(model="any", messages=question, max_tokens=16, temperature=1.0, seed=5 + i)
        assert alone.choices[0].message.content == text
    single = client.chat.completions.create(model="any", messages=question, max_tokens=16, temperature=1.0, seed=5)
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens
    assert reply.usage.completion_tokens == sum(
        client.chat.completions.create(
            model="any", messages=question, max_tokens=16, temperature=1.0, seed=5 + i
        ).usage.completion_tokens
        for i in range(3)
    )
    completions = client.completions.create(model="any", prompt="The sea is", max_tokens=8, n=2, temperature=1.0, seed=9)
    assert len(completions.choices) == 2 and completions.choices[1].index == 1
    with pytest.raises(openai.BadRequestError, match="n > 1 with stream"):
        client.chat.completions.create(model="any", messages=question, max_tokens=4, n=2, stream=True)


def test_ignore_eos_makes_exactly_max_tokens(client):
    prompt = "Thank you for reading!\n\n"  # the base model ends this document after ~100 tokens
    ended = client.completions.create(model="any", prompt=prompt, max_tokens=200, temperature=0)
    assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens < 200  # it would stop early
    for temperature in (0, 0.8):
        full = client.completions.create(
            model="any", prompt=prompt, max_tokens=200, temperature=temperature, seed=1, extra_body={"ignore_eos": True}
        )
        assert full.usage.completion_tokens == 200 and full.choices[0].finish_reason == "length"


def test_a_raw_prompt_with_the_servers_urial_prefix_reuses_its_evaluation(url):
    from untuned.conversation import Conversation
    from untuned.prompt import load_prompt

    conversation = Conversation(load_prompt("helpful"))
    conversation.add_user("What is the capital of Italy?")
    text = conversation.render().text
    before = http.get(f"{url}/health").json()["engine"]
    chat = http.post(
        f"{url}/v1/chat/completions", json={"messages": ask("What is the capital of Italy?"), "max_tokens": 12, "temperature": 0}
    ).json()
    raw = http.post(f"{url}/v1/completions", json={"prompt": text, "max_tokens": 12, "temperature": 0}).json()
    after = http.get(f"{url}/health").json()["engine"]
    assert raw["choices"][0]["text"].startswith(chat["choices"][0]["message"]["content"][:10])
    assert after["prefix_hits"] - before["prefix_hits"] >= 1 and after["prefix_misses"] - before["prefix_misses"] <= 1
