"""``/v1/chat/completions``: its router, wire records, the conversation it builds, tool calls."""
