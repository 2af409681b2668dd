"""Which implementation runs, and the refusal of stale C extensions."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from gateway import native


def test_every_extension_is_built_and_runs():
    assert native.choices() == dict.fromkeys(native.EXTENSIONS, True)
    assert native.stale_extensions() == []


def test_the_choice_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="gateway.native"):
        native.log_choices()
    assert "Mac0 proof check C" in caplog.text and "rate-limit buckets C" in caplog.text


def test_a_source_newer_than_its_build_is_stale(tmp_path: Path):
    """A copy of the sources, one touched after the build: refused by name."""
    root = Path(native.__file__).resolve().parent.parent
    for source in native.EXTENSIONS.values():
        copy = tmp_path / source
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes((root / source).read_bytes())
        os.utime(copy, (1, 1))  # older than any build
    assert native.stale_extensions(tmp_path) == []
    touched = tmp_path / native.EXTENSIONS["gateway.resource_server._bucket"]
    future = time.time() + 3600
    os.utime(touched, (future, future))
    (stale,) = native.stale_extensions(tmp_path)
    assert stale.startswith("gateway.resource_server._bucket (_bucket.")
    assert stale.endswith("is older than gateway/resource_server/_bucket.c")
