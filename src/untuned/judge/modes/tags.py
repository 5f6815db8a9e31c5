"""``tag``: the query alone labelled with just-eval's task types, topics and one difficulty."""

from __future__ import annotations

from typing import Any

from untuned.benchmarks.just_eval import DIFFICULTIES, TASK_TYPES, TOPICS
from untuned.errors import ReplyError
from untuned.judge.mode import JudgeMode, fenced
from untuned.judge.parse import extract_json, field_of, labels_of
from untuned.judge.sections import TAGS
from untuned.judge.verdicts import TagVerdict


class TagMode(JudgeMode):
    takes = "queries"
    section = TAGS
    record = TagVerdict
    summary = "Tag each query with task types, topics and a difficulty (just-eval's label sets)."

    def schema(self) -> dict:
        def many(values: tuple[str, ...]) -> dict:
            return {"type": "array", "items": {"type": "string", "enum": list(values)}, "minItems": 1, "maxItems": 3}

        return {
            "type": "object",
            "properties": {
                "task_types": many(TASK_TYPES),
                "topics": many(TOPICS),
                "difficulty": {"type": "string", "enum": list(DIFFICULTIES)},
            },
            "required": ["task_types", "topics", "difficulty"],
        }

    def instructions(self) -> str:
        return (
            "Classify the user request you are given. Pick every task type and topic that applies, and one "
            f"difficulty.\n\nTask types: {', '.join(TASK_TYPES)}\nTopics: {', '.join(TOPICS)}\n"
            f"Difficulty: {', '.join(DIFFICULTIES)}\n\n"
            'Reply with JSON: {"task_types": [...], "topics": [...], "difficulty": "..."}'
        )

    def judged_answer(self, item: Any) -> str:
        return ""  # the query alone

    def item(self, query: str, answer: str, other: str) -> str:
        return fenced("Request", query)

    def parse(self, text: str) -> dict[str, Any]:
        data = extract_json(text)
        difficulty = labels_of(field_of(data, "difficulty"), DIFFICULTIES, "difficulty")
        if len(difficulty) != 1:
            raise ReplyError("difficulty must be one value")
        labels = {
            "task_types": labels_of(field_of(data, "task_types"), TASK_TYPES, "task types"),
            "topics": labels_of(field_of(data, "topics"), TOPICS, "topics"),
            "difficulty": difficulty,
        }
        return {"labels": labels}


MODE = TagMode("tag", "2")
