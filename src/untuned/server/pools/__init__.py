"""``/v1/untuned/pools``: kept examples, over HTTP."""
