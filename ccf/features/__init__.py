"""Feature math: pure, engine-agnostic objects with River's verbs (``update``/``get``)."""
