"""Helpers around DTLSSocket/tinydtls (gateway.dtls.tinydtls): address
mapping, the library clock, the PSK store adapter, weak callbacks."""

from __future__ import annotations

import gc
import subprocess

from DTLSSocket import dtls

from gateway.dtls.tinydtls import (
    MAX_PSK_LENGTH,
    PskStore,
    TickClock,
    dtls_address,
    new_session,
    weak_callback,
)


def test_addresses_are_keyed_as_tinydtls_reports_them() -> None:
    assert dtls_address(("127.0.0.1", 5684)) == ("::ffff:127.0.0.1", 5684)
    assert dtls_address(("::ffff:127.0.0.1", 1, 0, 0)) == ("::ffff:127.0.0.1", 1)
    assert dtls_address(("fe80::1%lo", 2, 0, 1)) == ("fe80::1", 2)
    assert dtls_address(("2001:db8:0::1", 3)) == ("2001:db8::1", 3)
    session, key = new_session(("127.0.0.1", 40000))
    assert key == (session.addr, session.port) == ("::ffff:127.0.0.1", 40000)


def test_tick_clock_measures_delays_on_the_library_clock() -> None:
    clock = TickClock()
    now = clock.now()
    assert now is not None
    delay = clock.seconds_until(now + 1500)
    assert delay is not None and 1.4 <= delay <= 1.5
    assert clock.seconds_until(now - 10) == 0.0


def test_psk_store_asks_once_and_never_raises() -> None:
    asked: list[bytes] = []

    def lookup(identity: bytes) -> bytes | None:
        asked.append(identity)
        return b"k" * 16 if identity == b"dev" else None

    store = PskStore(lookup)
    assert store.keys() is store
    assert b"dev" in store
    assert store[b"dev"] == store[b"dev"] == b"k" * 16
    assert asked == [b"dev"]
    # An identity it was not asked about gets a random key, never an error.
    other = store[b"other"]
    assert len(other) == MAX_PSK_LENGTH and other != store[b"other"]
    assert b"nobody" not in store and "text" not in store
    store.forget()
    assert store[b"dev"] != b"k" * 16


def test_weak_callbacks_do_not_keep_their_object_alive() -> None:
    class Owner:
        def method(self, value: int) -> int:
            return value + 1

    owner = Owner()
    callback = weak_callback(owner.method, -1)
    assert callback(1) == 2
    del owner
    gc.collect()
    assert callback(1) == -1


def test_the_dtls_library_is_built_hardened():
    """``make`` rebuilds DTLSSocket from its sdist with -fstack-protector-strong
    and -D_FORTIFY_SOURCE=2 (Makefile DTLS_CFLAGS): the extension calls the
    stack-protector failure handler and fortified libc functions."""
    symbols = subprocess.run(
        ["nm", "-D", "--undefined-only", dtls.__file__], capture_output=True, text=True, check=True
    ).stdout
    assert "__stack_chk_fail" in symbols, "DTLSSocket built without the stack protector: run make"
    assert "_chk@" in symbols.replace("__stack_chk_fail@", ""), "built without _FORTIFY_SOURCE"
