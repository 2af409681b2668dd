"""Benchmarks that print our numbers next to a peer's, measured in the same
run (not timed tests). Run one with ``python -m bench.<name>``; ``--tiny``
is a CI smoke run, ``--json FILE`` writes the numbers for ``make bench``."""
