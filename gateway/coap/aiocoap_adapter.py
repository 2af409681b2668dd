"""The one place the gateway reaches past aiocoap's documented API.

aiocoap is the CoAP message model and server loop; a few things the gateway
needs are only reachable through its internals. Each such hook is named in
:data:`HOOKS` with a check, and :func:`check_aiocoap` runs them all at import,
so an aiocoap release that moves one fails at start-up with the hook's name
instead of misbehaving on the request path (docs/decisions.md "aiocoap behind
one adapter"). The DTLS transport's own hooks are checked here too.

Hooks used from this module:

* the option dict of a message (``Options._options``: option number -> the
  options of that number, each with a ``value``): the covered parts of a
  Proof (docs/design.md "Wire formats") are read from it without decoding
  every option through aiocoap's properties;
* the block-wise helpers (``aiocoap.blockwise.Block1Spool`` and
  ``Block2Cache``, RFC 7959) that aiocoap's own resources use privately;
* attributes on a request message: the authorized context of a request
  travels on the request object the resources receive (:func:`set_auth`);
* an ``Options`` object built from an option dict the DTLS transport's
  decoder made (:func:`options_from`, ``gateway.dtls.codec``);
* a custom transport in a ``Context`` (:func:`append_transport`,
  ``gateway.dtls.interface``): aiocoap has no public hook for one;
* how a ``Context`` starts rendering a request (:class:`ServerContext`):
  aiocoap names every render task after the request's ``repr``, formatted
  for each request and never read by the gateway, and puts a second pipe
  between the site and the exchange for every request, only to turn an
  exception into an error response; its closures form a reference cycle
  per request, left to the garbage collector;
* the message and token managers' internals the DTLS transport's compact
  deduplication replaces (``gateway.dtls.exchanges``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiocoap
import aiocoap.blockwise
import aiocoap.messagemanager
import aiocoap.meta
import aiocoap.options
import aiocoap.pipe
import aiocoap.protocol
import aiocoap.tokenmanager

from gateway.errors import GatewayError

#: aiocoap releases this adapter is written for (pyproject.toml says the same).
SUPPORTED = ((0, 4, 17), (0, 5, 0))
#: The same range as text, for messages.
SUPPORTED_TEXT = ">=0.4.17,<0.5"
#: Where the authorized context sits on a request message.
AUTH_ATTRIBUTE = "acegw_auth"
#: Uri-Path's option number (RFC 7252 §5.10).
URI_PATH = int(aiocoap.OptionNumber.URI_PATH)


class AiocoapIncompatible(GatewayError):
    """The installed aiocoap lacks a hook the gateway needs (exit status 2:
    an installation problem, not a runtime one)."""

    exit_status = 2
    reason = "aiocoap_incompatible"


@dataclass(frozen=True)
class Hook:
    """One use of aiocoap beyond its documented API: ``check`` returns
    normally when the installed aiocoap provides it, else raises."""

    name: str
    used_by: str
    check: Callable[[], None]


def _options_dict() -> None:
    message = aiocoap.Message(code=aiocoap.GET, uri_path=("a",), uri_query=("q",))
    options = message.opt._options
    if not isinstance(options, dict) or [o.value for o in options[15]] != ["q"]:
        raise TypeError("Options._options is not a dict of option number -> options")


def _options_assignable() -> None:
    message = aiocoap.Message(code=aiocoap.GET, uri_path=("a",))
    opt = aiocoap.options.Options.__new__(aiocoap.options.Options)
    opt._options = dict(message.opt._options)  # what options_from does
    if opt.uri_path != ("a",):
        raise TypeError("an Options object does not read its options from Options._options")


def _block1_spool() -> None:
    spool = aiocoap.blockwise.Block1Spool()
    if not callable(spool.feed_and_take):
        raise TypeError("Block1Spool.feed_and_take is not callable")


def _block2_cache() -> None:
    cache = aiocoap.blockwise.Block2Cache()
    if not callable(cache.extract_or_insert):
        raise TypeError("Block2Cache.extract_or_insert is not callable")


def _message_attributes() -> None:
    message = aiocoap.Message(code=aiocoap.GET)
    setattr(message, AUTH_ATTRIBUTE, None)


def _transport_append() -> None:
    method = aiocoap.protocol.Context._append_tokenmanaged_messagemanaged_transport
    if not callable(method):
        raise TypeError("not callable")


#: What aiocoap 0.4.17's ``Context.render_to_pipe`` refers to: the error
#: conversion, the driving task and the site's rendering, nothing else; so
#: :class:`ServerContext`, made of the same parts, does what it does.
_RENDER_TO_PIPE_NAMES = (
    "error_to_message",
    "log",
    "run_driving_pipe",
    "_render_to_pipe",
    "request",
)


def _render_to_pipe() -> None:
    names = aiocoap.protocol.Context.render_to_pipe.__code__.co_names
    if sorted(names) != sorted(_RENDER_TO_PIPE_NAMES):
        raise TypeError(f"Context.render_to_pipe refers to {names}, not {_RENDER_TO_PIPE_NAMES}")
    if not inspect.iscoroutinefunction(aiocoap.protocol.Context._render_to_pipe):
        raise TypeError("Context._render_to_pipe is not a coroutine function")
    if "name" not in inspect.signature(aiocoap.pipe.run_driving_pipe).parameters:
        raise TypeError("pipe.run_driving_pipe takes no task name")
    if list(inspect.signature(aiocoap.pipe.error_to_message).parameters) != ["old_pr", "log"]:
        raise TypeError("pipe.error_to_message does not take (pipe, log)")


def _manager_internals() -> None:
    manager = aiocoap.messagemanager.MessageManager
    for name in ("_deduplicate_message", "_store_response_for_duplicates", "_send_via_transport"):
        if not callable(getattr(manager, name)):
            raise TypeError(f"MessageManager.{name} is not callable")
    if not callable(aiocoap.tokenmanager.TokenManager.process_request):
        raise TypeError("TokenManager.process_request is not callable")


#: Every hook, checked at import.
HOOKS: tuple[Hook, ...] = (
    Hook("Options._options (read)", "gateway.coap", _options_dict),
    Hook("Options._options (assign)", "gateway.dtls.codec", _options_assignable),
    Hook("MessageManager and TokenManager internals", "gateway.dtls.exchanges", _manager_internals),
    Hook("blockwise.Block1Spool.feed_and_take", "gateway.coap.service_site", _block1_spool),
    Hook("blockwise.Block2Cache.extract_or_insert", "gateway.coap.service_site", _block2_cache),
    Hook("Message attributes", "gateway.coap.authorizing_site", _message_attributes),
    Hook(
        "Context._append_tokenmanaged_messagemanaged_transport",
        "gateway.dtls.interface",
        _transport_append,
    ),
    Hook("Context.render_to_pipe", "gateway.coap.aiocoap_adapter.ServerContext", _render_to_pipe),
)


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.4.17"`` -> ``(0, 4, 17)``; a pre-release suffix is ignored."""
    parts: list[int] = []
    for part in text.split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def missing_hooks(hooks: Sequence[Hook] = HOOKS) -> list[str]:
    """The hooks the installed aiocoap does not provide, each with why."""
    missing = []
    for hook in hooks:
        try:
            hook.check()
        except Exception as exc:
            missing.append(f"{hook.name} (used by {hook.used_by}): {type(exc).__name__}: {exc}")
    return missing


def check_aiocoap(version: str | None = None, hooks: Sequence[Hook] = HOOKS) -> None:
    """Raise :class:`AiocoapIncompatible` naming the version or every missing
    hook when the installed aiocoap is not one this adapter works with."""
    version = aiocoap.meta.version if version is None else version
    low, high = SUPPORTED
    if not low <= parse_version(version) < high:
        raise AiocoapIncompatible(
            f"aiocoap {version} is installed; the gateway needs aiocoap{SUPPORTED_TEXT}"
        )
    missing = missing_hooks(hooks)
    if missing:
        raise AiocoapIncompatible(
            f"aiocoap {version} lacks what the gateway needs: " + "; ".join(missing)
        )


check_aiocoap()


# --- the hooks ---------------------------------------------------------------


def options_of(message: aiocoap.Message) -> Mapping[int, list[Any]]:
    """The message's options by number (read only; each has a ``value``)."""
    options: Mapping[int, list[Any]] = message.opt._options
    return options


def option_values(message: aiocoap.Message, number: int) -> tuple[Any, ...]:
    """The values of the message's options with this number, in order."""
    found = message.opt._options.get(number)
    return () if found is None else tuple([o.value for o in found])


def uri_path(message: aiocoap.Message) -> tuple[str, ...]:
    """The message's Uri-Path segments (RFC 7252 §5.10.1), as
    ``message.opt.uri_path`` gives them."""
    return option_values(message, URI_PATH)


def options_from(options: dict[int, list[Any]]) -> aiocoap.options.Options:
    """An ``Options`` holding ``options`` (option number -> option objects of
    that number, in order) as they are, without re-encoding them."""
    opt: aiocoap.options.Options = aiocoap.options.Options.__new__(aiocoap.options.Options)
    opt._options = options
    return opt


async def append_transport(context: aiocoap.Context, make: Callable[[Any], Awaitable[Any]]) -> None:
    """Add the transport ``make(message_manager)`` builds to ``context``: the
    path aiocoap's own ``create_server_context`` takes for its built-in
    transports (no public hook for a custom one)."""
    await context._append_tokenmanaged_messagemanaged_transport(make)


#: The name of every render task of a :class:`ServerContext`.
RENDER_TASK_NAME = "acegw-render"


class ServerContext(aiocoap.Context):  # type: ignore[misc]
    """aiocoap's ``Context`` for the gateway's servers, rendering a request
    as aiocoap's does (in a task the pipe cancels when the peer loses
    interest; an exception becomes an error response through aiocoap's own
    conversion, ``pipe.error_to_message``), with two costs of the request
    path taken out: the task is named :data:`RENDER_TASK_NAME` instead of
    after the request's ``repr``, and the site renders straight into the
    exchange's pipe; the conversion's pipe is only built when rendering
    raised."""

    def render_to_pipe(self, pipe: Any) -> None:
        aiocoap.pipe.run_driving_pipe(pipe, self._render_or_convert(pipe), name=RENDER_TASK_NAME)

    async def _render_or_convert(self, pipe: Any) -> None:
        try:
            await self._render_to_pipe(pipe)
        except Exception as exc:
            aiocoap.pipe.error_to_message(pipe, self.log).add_exception(exc)


def block1_spool() -> aiocoap.blockwise.Block1Spool:
    """A Block1 reassembly spool (RFC 7959 §2.5)."""
    return aiocoap.blockwise.Block1Spool()


def block2_cache() -> aiocoap.blockwise.Block2Cache:
    """A cache of responses being sent block by block (RFC 7959 §2.4)."""
    return aiocoap.blockwise.Block2Cache()


def set_auth(message: aiocoap.Message, auth: Any) -> None:
    """Put the authorized context on the request the resources receive."""
    setattr(message, AUTH_ATTRIBUTE, auth)


def auth_of(message: aiocoap.Message) -> Any:
    """The authorized context put on ``message``, or None."""
    return getattr(message, AUTH_ATTRIBUTE, None)


__all__ = [
    "AUTH_ATTRIBUTE",
    "HOOKS",
    "RENDER_TASK_NAME",
    "SUPPORTED_TEXT",
    "AiocoapIncompatible",
    "Hook",
    "ServerContext",
    "append_transport",
    "auth_of",
    "block1_spool",
    "block2_cache",
    "check_aiocoap",
    "missing_hooks",
    "option_values",
    "options_from",
    "options_of",
    "parse_version",
    "set_auth",
    "uri_path",
]
