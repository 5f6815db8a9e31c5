"""Replies of an OpenAI-compatible judge, for the scripted judge servers of the tests."""

from __future__ import annotations

import json

JSON = {"Content-Type": "application/json"}


def chat_reply(content: str) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "judge",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }
    ).encode()


def user_text(body: bytes) -> str:
    """The prompt a judge was sent: every message's text (instructions in the system message, the item after)."""
    return "\n\n".join(message["content"] for message in json.loads(body)["messages"])
