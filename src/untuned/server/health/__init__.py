"""``/health``, ``/metrics``: router and wire records."""
