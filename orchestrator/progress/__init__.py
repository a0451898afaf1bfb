"""Where an invocation stands, for whoever watches: its phases announced (``phases``) and timed for
the benchmark (``phase_marks``), the named points where a test can stop it (``failpoints``), and
transformers' own output kept out of its lines (``quiet_transformers``)."""
