"""Operational logging of ``acegw serve``: one JSON object per line on stderr
(or plain text), at the configured level.

A JSON line has ``ts`` (ISO 8601 UTC, milliseconds), ``level``, ``logger``,
``msg``, ``worker`` when the process is a worker, and ``exc`` with the
traceback of an exception. An operational event
(:mod:`gateway.operations.events`) adds ``event`` (its stable name) and its
fields as top-level keys. Log messages in this project never hold a secret
or a whole token (identities appear as labels, keys as kids); the formatter
adds nothing but these fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class JsonFormatter(logging.Formatter):
    """``logging`` records as JSON lines."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, object] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if event is not None:
            out["event"] = event
            for key, value in getattr(record, "fields", {}).items():
                out.setdefault(key, value)
        if self.worker is not None:
            out["worker"] = self.worker
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def setup_logging(
    level: str = "INFO",
    *,
    json_lines: bool = True,
    worker: int | None = None,
    stream: TextIO | None = None,
) -> None:
    """Replace the root logger's handlers with one writing to ``stream``
    (stderr) at ``level``."""
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(worker))
    else:
        prefix = f"[worker {worker}] " if worker is not None else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, name))
    # aiocoap logs every retransmission and unparsable datagram at INFO/WARNING;
    # the gateway's own counters cover those.
    if root.level > logging.DEBUG:
        logging.getLogger("coap-server").setLevel(max(root.level, logging.WARNING))


__all__ = ["LEVELS", "JsonFormatter", "setup_logging"]
