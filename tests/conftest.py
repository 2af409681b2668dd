"""Suite-wide guards: a test that leaves a child process or an asyncio task
behind fails (servers started by a test are stopped by it); the suite does
not start on C extensions older than their source."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.native import stale_extensions


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test C extensions that are missing or older than their
    source (``make venv`` rebuilds them)."""
    stale = stale_extensions()
    if stale:
        pytest.exit("stale C extensions: " + "; ".join(stale) + " (run make venv)", returncode=3)


def _child_pids() -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(autouse=True)
def no_leaked_children():
    before = _child_pids()
    yield
    leaked = [p for p in _child_pids() - before if _alive(p)]
    assert not leaked, f"test left child processes running: {leaked}"


@pytest.fixture(autouse=True)
async def no_leaked_tasks(request):
    """Async tests must not leave tasks running on their loop."""
    if not asyncio.iscoroutinefunction(getattr(request.node, "function", None)):
        yield
        return
    yield
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if pending:
        # give cancelled tasks one loop turn to finish their cleanup
        await asyncio.sleep(0)
        pending = [t for t in pending if not t.done()]
    assert not pending, f"test left asyncio tasks running: {pending[:5]}"
