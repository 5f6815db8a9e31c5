"""``/v1/models``: router and wire records."""
