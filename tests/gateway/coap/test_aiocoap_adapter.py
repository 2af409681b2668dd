"""The aiocoap adapter: each hook works on the installed aiocoap, and a
missing hook or an unsupported version is named at import."""

from __future__ import annotations

import asyncio
import logging

import aiocoap
import aiocoap.blockwise
import aiocoap.error
import aiocoap.pipe
import aiocoap.protocol
import aiocoap.resource
import pytest

from gateway.coap import aiocoap_adapter as adapter
from gateway.dtls import DtlsServerConfig, create_server_context
from gateway.dtls.probe import DtlsProbe
from tests.gateway.conftest import DTLS_PSKS
from tokens.params import PROOF_OPTION


def test_the_installed_aiocoap_has_every_hook():
    assert adapter.missing_hooks() == []
    adapter.check_aiocoap()


@pytest.mark.parametrize("hook", adapter.HOOKS, ids=lambda h: h.name)
def test_a_missing_hook_is_named(hook, monkeypatch):
    def broken() -> None:
        raise AttributeError("gone")

    broken_hooks = [
        adapter.Hook(h.name, h.used_by, broken) if h is hook else h for h in adapter.HOOKS
    ]
    with pytest.raises(adapter.AiocoapIncompatible) as info:
        adapter.check_aiocoap(hooks=broken_hooks)
    assert hook.name in info.value.description and hook.used_by in info.value.description
    assert info.value.exit_status == 2


def test_each_hook_check_fails_without_its_aiocoap_part(monkeypatch):
    """The checks look at the real thing: take it away and they fail."""
    monkeypatch.delattr(aiocoap.blockwise.Block1Spool, "feed_and_take")
    monkeypatch.delattr(aiocoap.blockwise.Block2Cache, "extract_or_insert")
    monkeypatch.delattr(aiocoap.protocol.Context, "_append_tokenmanaged_messagemanaged_transport")
    missing = " ".join(adapter.missing_hooks())
    for name in (
        "Block1Spool.feed_and_take",
        "Block2Cache.extract_or_insert",
        "_append_tokenmanaged_messagemanaged_transport",
    ):
        assert name in missing


@pytest.mark.parametrize("version", ["0.4.16", "0.5.0", "1.0"])
def test_a_version_outside_the_range_is_refused(version):
    with pytest.raises(adapter.AiocoapIncompatible, match=rf"aiocoap {version} .*>=0.4.17,<0.5"):
        adapter.check_aiocoap(version)


def test_parse_version():
    assert adapter.parse_version("0.4.17") == (0, 4, 17)
    assert adapter.parse_version("0.4.18rc1") == (0, 4, 18)


def test_options_and_values_are_read_as_received():
    message = aiocoap.Message(code=aiocoap.GET, uri_path=("a", "b"), uri_query=("x=1", "y"))
    message.opt.add_option(aiocoap.optiontypes.OpaqueOption(PROOF_OPTION, b"\x01"))
    assert adapter.option_values(message, 15) == ("x=1", "y")
    assert adapter.option_values(message, PROOF_OPTION) == (b"\x01",)
    assert adapter.option_values(message, 12) == ()
    assert set(adapter.options_of(message)) == {11, 15, PROOF_OPTION}


def test_the_authorized_context_rides_on_the_request():
    message = aiocoap.Message(code=aiocoap.GET)
    assert adapter.auth_of(message) is None
    adapter.set_auth(message, "ctx")
    assert adapter.auth_of(message) == "ctx"


async def test_block_helpers_reassemble_and_cut():
    spool = adapter.block1_spool()
    whole = aiocoap.Message(code=aiocoap.POST, payload=b"x" * 10)
    assert spool.feed_and_take(whole).payload == b"x" * 10
    cache = adapter.block2_cache()
    request = aiocoap.Message(code=aiocoap.GET, uri_path=("big",))
    request.remote = type(
        "Remote",
        (),
        {"maximum_payload_size": 1024, "maximum_block_size_exp": 6, "blockwise_key": "peer"},
    )()

    async def build():
        return aiocoap.Message(code=aiocoap.CONTENT, payload=b"y" * 3000)

    first = await cache.extract_or_insert(request, build)
    assert first.opt.block2 is not None and len(first.payload) <= 1024


def test_the_render_hook_check_fails_when_aiocoap_renders_differently(monkeypatch):
    """ServerContext replaces Context.render_to_pipe: the check refuses an
    aiocoap whose method does more (or other) than the one replaced."""

    def render_to_pipe(self, pipe):  # what a later aiocoap might do
        self.log.debug("rendering %r", pipe.request)
        self.render_observed(pipe)

    monkeypatch.setattr(aiocoap.protocol.Context, "render_to_pipe", render_to_pipe)
    (missing,) = adapter.missing_hooks()
    assert "Context.render_to_pipe" in missing and "ServerContext" in missing


def test_the_render_hook_check_needs_a_named_driving_task(monkeypatch):
    def run_driving_pipe(pipe, coroutine):
        raise AssertionError

    monkeypatch.setattr(aiocoap.pipe, "run_driving_pipe", run_driving_pipe)
    (missing,) = adapter.missing_hooks()
    assert "Context.render_to_pipe" in missing and "task name" in missing


class _Recording(aiocoap.resource.Resource):
    """Records the render task's name; ``/fail`` raises, ``/gone`` is 4.04."""

    def __init__(self, outcome: str) -> None:
        super().__init__()
        self.outcome = outcome
        self.task_names: list[str] = []

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        task = asyncio.current_task()
        assert task is not None
        self.task_names.append(task.get_name())
        if self.outcome == "fail":
            raise RuntimeError("resource bug")
        if self.outcome == "gone":
            raise aiocoap.error.NotFound()
        return aiocoap.Message(code=aiocoap.CONTENT, payload=b"ok")


async def test_a_request_renders_through_the_server_context_without_its_repr(monkeypatch):
    """Over real DTLS: the site renders in a task named RENDER_TASK_NAME, no
    request's repr is formatted on the way, and aiocoap's conversion of an
    exception into a response still applies (5.00; a renderable error's own
    code)."""
    site = aiocoap.resource.Site()
    resources = {name: _Recording(name) for name in ("ok", "fail", "gone")}
    for name, res in resources.items():
        site.add_resource([name], res)
    context, server = await create_server_context(
        site, DtlsServerConfig(host="127.0.0.1", port=0), DTLS_PSKS.get
    )
    assert isinstance(context, adapter.ServerContext)
    probe = DtlsProbe(server.address)
    try:
        session = await probe.connect(b"dev-1", DTLS_PSKS[b"dev-1"], timeout=10)
        reprs = 0
        real_repr = aiocoap.Message.__repr__

        def counting_repr(message: aiocoap.Message) -> str:
            nonlocal reprs
            reprs += 1
            return real_repr(message)

        monkeypatch.setattr(aiocoap.Message, "__repr__", counting_repr)
        codes = []
        for name in ("ok", "fail", "gone"):
            request = aiocoap.Message(code=aiocoap.GET, uri_path=(name,))
            codes.append((await session.request(request, timeout=10)).code)
        assert reprs == 0
    finally:
        await probe.close()
        await context.shutdown()
    assert codes == [aiocoap.CONTENT, aiocoap.INTERNAL_SERVER_ERROR, aiocoap.NOT_FOUND]
    for res in resources.values():
        assert res.task_names == [adapter.RENDER_TASK_NAME]


class _Site:
    """A root resource rendering into the pipe as told."""

    def __init__(self, render) -> None:
        self.render_to_pipe = render


def _pipe() -> tuple[aiocoap.pipe.Pipe, list[tuple[object, bool]]]:
    pipe = aiocoap.pipe.Pipe(aiocoap.Message(code=aiocoap.GET), logging.getLogger("test"))
    events: list[tuple[object, bool]] = []

    def record(event) -> bool:
        events.append((event.message.code if event.message else event.exception, event.is_last))
        return not event.is_last

    pipe.on_event(record)
    return pipe, events


async def _rendered() -> None:
    for _ in range(10):  # the render task runs within a few loop turns
        await asyncio.sleep(0)


async def test_the_server_context_passes_every_response_and_converts_exceptions():
    """Responses the site adds reach the exchange's pipe in order (a
    notification before the last one); an exception becomes aiocoap's error
    response (5.00, or a renderable error's code)."""

    async def notifications(pipe) -> None:
        pipe.add_response(aiocoap.Message(code=aiocoap.CONTENT), is_last=False)
        pipe.add_response(aiocoap.Message(code=aiocoap.VALID), is_last=True)

    async def bug(pipe) -> None:
        raise RuntimeError("resource bug")

    async def gone(pipe) -> None:
        raise aiocoap.error.NotFound()

    got = []
    for render in (notifications, bug, gone):
        context = adapter.ServerContext(loop=asyncio.get_running_loop(), serversite=_Site(render))
        pipe, events = _pipe()
        context.render_to_pipe(pipe)
        await _rendered()
        got.append(events)
    assert got == [
        [(aiocoap.CONTENT, False), (aiocoap.VALID, True)],
        [(aiocoap.INTERNAL_SERVER_ERROR, True)],
        [(aiocoap.NOT_FOUND, True)],
    ]


async def test_the_render_task_is_cancelled_when_the_peer_loses_interest():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(pipe) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    context = adapter.ServerContext(loop=asyncio.get_running_loop(), serversite=_Site(slow))
    pipe = aiocoap.pipe.Pipe(aiocoap.Message(code=aiocoap.GET), logging.getLogger("test"))
    stop = pipe.on_event(lambda event: True)
    context.render_to_pipe(pipe)
    await asyncio.wait_for(started.wait(), 5)
    stop()  # the exchange is gone (e.g. the request was superseded)
    await asyncio.wait_for(cancelled.wait(), 5)
