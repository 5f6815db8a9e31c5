"""``/v1/completions``: its router and wire records."""
