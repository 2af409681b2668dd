"""Firmware notes: prose for device engineers, the test vectors and the tools
that make and check them (``python -m firmware_notes.generate_vectors``,
``python -m firmware_notes.walkthrough``, ``python -m firmware_notes.measure_wire``).
Run them from the repository root."""
