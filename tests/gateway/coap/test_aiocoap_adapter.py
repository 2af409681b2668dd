"""The aiocoap adapter: each hook works on the installed aiocoap, and a
missing hook or an unsupported version is named at import."""

from __future__ import annotations

import aiocoap
import aiocoap.blockwise
import pytest

from gateway.coap import aiocoap_adapter as adapter
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
