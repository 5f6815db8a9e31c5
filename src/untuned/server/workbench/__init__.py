"""``/v1/untuned/*``: the workbench's router and wire records."""
