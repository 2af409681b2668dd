"""The whole device flow with libcoap's command-line client only: what a C
device on libcoap does, one ``coap-client-openssl`` run per message.

1. ``POST /token`` over DTLS-PSK (identity = client id), payload file with
   Content-Format 19: the token request ``{33: 2, 9: scope}``;
2. ``POST /authz-info`` with the access token from the response;
3. ``GET /whoami`` with a Proof option (piv 1): the gateway has no replay
   window for the new PoP key yet and answers 4.01 with an Echo option. The
   Echo value is read from coap-client's ``-v 7`` log. (libcoap 4.3 repeats a
   request answered 4.01 + Echo by itself, copying the Echo option but not
   recomputing our proof, so its repeat is refused with 4.01 "MAC does not
   verify"; the walk records that and goes on.)
4. ``GET /whoami`` with ``-O 252,0x<echo>`` and a new proof (piv 2) covering
   the Echo: 2.05, the window is open;
5. ``GET /whoami`` with piv 3 on a new DTLS session: 2.05 without any Echo.

The token request, the token response parsing and every Proof option come
from :mod:`firmware_notes.recipe` (stdlib only, the recipe of
``firmware_notes/proof.md``); nothing here imports the project's ``tokens``.

Run against a gateway (``make run`` prints a demo device's id and PSK)::

    python -m firmware_notes.walkthrough --port 5684 --id demo-sensor-1 --psk <PSK>

``--measure`` puts a UDP relay (:mod:`firmware_notes.relay`) in between and
prints the size of every datagram.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware_notes import recipe
from firmware_notes.relay import Datagram, UdpRelay

BINARY = "coap-client-openssl"
#: "v:1 t:ACK c:4.01 i:4f6a {01} [ Echo:0x01a2... ] :: 'MAC does not verify'"
_PDU = re.compile(
    r"^v:1 t:(?P<type>CON|NON|ACK|RST) c:(?P<code>\S+) i:(?P<mid>[0-9a-f]+) "
    r"\{(?P<token>[0-9a-f]*)\} \[(?P<options>.*?)\](?: :: (?P<payload>.*))?$"
)
_ECHO = re.compile(r"\bEcho:0x(?P<hex>[0-9a-fA-F]+)")


@dataclass(frozen=True)
class Pdu:
    """A CoAP message as coap-client logs it at ``-v 7``."""

    type: str
    code: str
    mid: str
    token: str
    options: str
    payload: str | None

    @property
    def is_response(self) -> bool:
        return bool(re.fullmatch(r"\d\.\d\d", self.code))

    @property
    def echo(self) -> bytes | None:
        m = _ECHO.search(self.options)
        return bytes.fromhex(m.group("hex")) if m else None


def parse_pdus(log: str) -> list[Pdu]:
    """Every CoAP message coap-client logged. Requests are logged once when
    queued and again when sent after the handshake; the duplicates (same
    Message ID and code) are dropped."""
    out: list[Pdu] = []
    seen: set[tuple[str, str, str]] = set()
    for line in log.splitlines():
        m = _PDU.match(line.strip())
        if not m:
            continue
        pdu = Pdu(m["type"], m["code"], m["mid"], m["token"], m["options"].strip(), m["payload"])
        key = (pdu.mid, pdu.code, pdu.type)
        if key in seen:
            continue
        seen.add(key)
        out.append(pdu)
    return out


@dataclass
class Step:
    """One coap-client run."""

    name: str
    argv: list[str]
    returncode: int
    log: str
    pdus: list[Pdu]
    output: bytes | None = None
    datagrams: list[Datagram] = field(default_factory=list)

    @property
    def responses(self) -> list[Pdu]:
        return [p for p in self.pdus if p.is_response]

    @property
    def final_code(self) -> str | None:
        return self.responses[-1].code if self.responses else None

    def shown_argv(self) -> str:
        """The command line with the PSK replaced (never print secrets)."""
        argv = list(self.argv)
        for i, arg in enumerate(argv[:-1]):
            if arg == "-k":
                argv[i + 1] = "<PSK>"
        return " ".join(argv)


@dataclass
class Walk:
    """Everything the walk did and saw."""

    steps: list[Step]
    token_response: recipe.TokenResponseFields
    echo: bytes
    whoami: dict[str, object]
    handshake: list[Datagram] = field(default_factory=list)


class WalkError(Exception):
    """A step did not get the answer the flow expects."""


#: OpenSSL's words in coap-client's log for a fatal alert from the gateway.
_ALERT = re.compile(r"alert read:fatal:(?P<alert>[a-z ]+)")


def diagnose(log: str, where: str) -> str:
    """Why a coap-client run got no CoAP answer, from its ``-v 7`` log:
    nothing came back (not running, wrong port, filtered), or the handshake
    was refused with a fatal alert. The gateway answers a wrong PSK, an
    unknown or disabled identity and a locked-out address alike (RFC 4279
    §2), so the walk cannot tell those apart; the operator can (audit
    ``handshake`` reason, ``acegw lockouts list``)."""
    alert = _ALERT.search(log)
    if alert is not None:
        return (
            f"handshake refused by {where} ({alert.group('alert')} alert): wrong PSK or "
            "unknown identity (a disabled client or a locked-out address looks the same)"
        )
    return f"no answer from {where} (is the gateway running on that port?)"


def refusal(pdu: Pdu | None) -> str:
    """What a 4.01 says when its diagnostic payload names a lockout, a token
    cut off or a disabled client; else the code and payload."""
    if pdu is None:
        return "no answer"
    text = (pdu.payload or "").lower()
    if "locked out" in text or "locked_out" in text:
        return f"{pdu.code} locked out (this address and identity are banned for a while)"
    if "cut-off" in text:
        return (
            f"{pdu.code} token predates the client's last cut-off (disabled, deleted or its "
            "rights narrowed since): get a new token"
        )
    if "disabled" in text:
        return f"{pdu.code} client disabled (the operator must enable it; then get a new token)"
    return f"{pdu.code}" + (f" {pdu.payload!r}" if pdu.payload else "")


async def coap_client(argv: list[str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise WalkError(f"{argv[0]} timed out") from None
    return proc.returncode or 0, out.decode("utf-8", errors="replace")


async def run(
    host: str,
    port: int,
    client_id: str,
    psk: str,
    *,
    scope: bytes | str | None = None,
    path: str = "/whoami",
    workdir: Path,
    binary: str = BINARY,
    measure: bool = False,
    timeout: float = 20.0,
    log: Callable[[str], None] = lambda line: None,
) -> Walk:
    """Walk the flow against the gateway at ``host:port``. ``scope``: AIF
    bytes or the text form; ``path`` must be a GET resource in that scope."""
    if shutil.which(binary) is None:
        raise WalkError(f"{binary} not found (Debian package libcoap3-bin)")
    relay = UdpRelay((host, port)) if measure else None
    target_host, target_port = await relay.start() if relay else (host, port)
    base = f"coaps://{target_host}:{target_port}"
    segments = [s for s in path.split("/") if s]
    steps: list[Step] = []

    async def step(name: str, args: list[str], out_file: Path | None = None) -> Step:
        argv = [binary, "-v", "7", "-U", "-B", "10", "-u", client_id, "-k", psk, *args]
        if out_file is not None:
            out_file.unlink(missing_ok=True)
            argv[-1:-1] = ["-o", str(out_file)]
        rc, text = await coap_client(argv, timeout)
        s = Step(name, argv, rc, text, parse_pdus(text))
        if out_file is not None and out_file.exists():
            s.output = out_file.read_bytes()
        steps.append(s)
        log(f"$ {s.shown_argv()}")
        for pdu in s.pdus:
            arrow = "<-" if pdu.is_response else "->"
            log(f"   {arrow} {pdu.type} {pdu.code} [{pdu.options}]")
        if rc != 0 and not s.responses:
            raise WalkError(f"{name}: {diagnose(text, f'{host}:{port}')}")
        if rc != 0:
            raise WalkError(f"{name}: coap-client exited {rc}:\n{text}")
        if not s.responses:
            raise WalkError(f"{name}: {diagnose(text, f'{host}:{port}')}")
        return s

    try:
        # 1. token request (RFC 9200 §5.8.1), Content-Format 19
        request_file = workdir / "token-request.cbor"
        request_file.write_bytes(recipe.token_request(scope))
        s = await step(
            "token",
            ["-m", "post", "-t", "19", "-f", str(request_file), f"{base}/token"],
            workdir / "token-response.cbor",
        )
        if s.final_code != "2.01" or s.output is None:
            last = s.responses[-1] if s.responses else None
            raise WalkError(f"/token answered {refusal(last)}:\n{s.log}")
        tr = recipe.parse_token_response(s.output)
        if tr.kid is None or tr.k is None:
            raise WalkError("the token response has no symmetric PoP key in cnf")
        log(f"   token {len(tr.access_token)} bytes, expires_in {tr.expires_in} s")

        # 2. upload the token (RFC 9200 §5.10.1)
        token_file = workdir / "token.cwt"
        token_file.write_bytes(tr.access_token)
        s = await step(
            "authz-info", ["-m", "post", "-t", "19", "-f", str(token_file), f"{base}/authz-info"]
        )
        if s.final_code != "2.01":
            last = s.responses[-1] if s.responses else None
            raise WalkError(f"/authz-info answered {refusal(last)}:\n{s.log}")

        def proof(piv: int, echo: bytes | None) -> str:
            value = recipe.hmac_proof(tr.kid, tr.k, 1, segments, piv=piv, echo=echo)  # type: ignore[arg-type]
            return f"{recipe.PROOF_OPTION},0x{value.hex()}"

        # 3. first proof-bearing request: 4.01 + Echo (no replay window yet)
        s = await step("proof-first", ["-m", "get", "-O", proof(1, None), f"{base}{path}"])
        first = s.responses[0] if s.responses else None
        if first is None or first.code != "4.01" or first.echo is None:
            raise WalkError(f"expected 4.01 with an Echo option:\n{s.log}")
        echo = first.echo
        log(f"   Echo {echo.hex()} ({len(echo)} bytes)")

        # 4. repeat with the Echo in the option and in the proof, next piv
        s = await step(
            "proof-echo",
            [
                "-m", "get",
                "-O", f"{recipe.ECHO_OPTION},0x{echo.hex()}",
                "-O", proof(2, echo),
                f"{base}{path}",
            ],
            workdir / "whoami.json",
        )  # fmt: skip
        if s.final_code != "2.05" or s.output is None:
            raise WalkError(f"expected 2.05 after the Echo:\n{s.log}")
        whoami = json.loads(s.output)

        # 5. the window is open: a new DTLS session, the next piv, no Echo
        s = await step(
            "proof-steady",
            ["-m", "get", "-O", proof(3, None), f"{base}{path}"],
            workdir / "whoami-2.json",
        )
        if s.final_code != "2.05":
            raise WalkError(f"expected 2.05 with the window open:\n{s.log}")
        walk = Walk(steps, tr, echo, whoami)
        if relay is not None:
            await asyncio.sleep(0.05)  # the gateway's last close_notify
            _assign(relay.datagrams, steps)
            walk.handshake = handshake_part(steps[0].datagrams)
        return walk
    finally:
        if relay is not None:
            await relay.close()


def _assign(datagrams: list[Datagram], steps: list[Step]) -> None:
    """Each coap-client run has its own source port: hand each step the
    datagrams of its port (in the order the runs happened)."""
    ports: list[int] = []
    for d in datagrams:
        if d.client not in ports:
            ports.append(d.client)
    if len(ports) != len(steps):
        raise WalkError(f"{len(steps)} coap-client runs but {len(ports)} client ports")
    for step, port in zip(steps, ports, strict=True):
        step.datagrams = [d for d in datagrams if d.client == port]


def handshake_part(datagrams: list[Datagram]) -> list[Datagram]:
    """The handshake datagrams of one session: everything before the first
    application data record, without exact retransmissions."""
    out: list[Datagram] = []
    for d in datagrams:
        if d.application_data:
            break
        if d not in out:
            out.append(d)
    return out


def application_part(datagrams: list[Datagram]) -> list[Datagram]:
    """The application data datagrams, without exact retransmissions of the
    one just before in the same direction."""
    out: list[Datagram] = []
    for d in datagrams:
        if not d.application_data:
            continue
        previous = [o for o in out if o.direction == d.direction]
        if previous and previous[-1] == d:
            continue
        out.append(d)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Walk the device flow with coap-client-openssl.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5684)
    p.add_argument("--id", required=True, help="the device's client id (DTLS identity)")
    p.add_argument("--psk", required=True, help="the device's PSK (text)")
    p.add_argument("--scope", default=None, help='e.g. "/whoami:GET" (default: as registered)')
    p.add_argument("--path", default="/whoami", help="a GET resource in the scope")
    p.add_argument("--binary", default=BINARY)
    p.add_argument("--measure", action="store_true", help="print datagram sizes (UDP relay)")
    args = p.parse_args(argv)
    scope = recipe.aif_scope(args.scope) if args.scope else None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            walk = asyncio.run(
                run(
                    args.host,
                    args.port,
                    args.id,
                    args.psk,
                    scope=scope,
                    path=args.path,
                    workdir=Path(tmp),
                    binary=args.binary,
                    measure=args.measure,
                    log=print,
                )
            )
        except WalkError as exc:
            print(f"walk failed: {exc}", file=sys.stderr)
            return 1
    print(f"{args.path}: {json.dumps(walk.whoami)}")
    if args.measure:
        for s in walk.steps:
            sizes = ", ".join(f"{d.direction} {d.size} {'+'.join(d.records)}" for d in s.datagrams)
            print(f"{s.name}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
