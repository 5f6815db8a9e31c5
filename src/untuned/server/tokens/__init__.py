"""``/tokenize``, ``/detokenize``: router and wire records."""
