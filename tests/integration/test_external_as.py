"""External-AS mode (RFC 9200 §5.10.1 with a separate AS): the gateway serves
no AS endpoints and accepts tokens of a configured issuer, whose keys it
reads from a COSE_KeySet file; the issuer is picked by the token's kid."""

from __future__ import annotations

import os

from aiocoap.numbers.codes import Code

from gateway.authorization_server.keystore import Keystore
from gateway.runtime.gateway import Gateway
from tokens import cnf as cnf_mod
from tokens.aif import Scope
from tokens.cwt import Claims, mint
from tokens.keys import SymmetricKey

from .conftest import DEVICE_ID, DEVICE_PSK, ProofDevice, device, gateway_config


async def test_tokens_of_an_external_issuer(state_dir, tmp_path):
    # the external AS: its own key directory, exported for this RS
    external = Keystore(tmp_path / "external-as-keys")
    keys_file = tmp_path / "external-as.cbor"
    keys_file.write_bytes(external.export_for_rs())
    os.chmod(keys_file, 0o600)
    config_path = state_dir / "acegw.toml"
    config_path.write_text(
        config_path.read_text()
        + f'\n[[rs.issuers]]\nname = "as.example"\nkeys_file = "{keys_file}"\n'
    )
    gw = Gateway(gateway_config(state_dir, ACEGW_AS_ENABLED="false"))
    gw.registry.add(DEVICE_ID, psk=DEVICE_PSK, scope="/whoami:GET")
    await gw.start()
    try:
        now = int(gw.clock())
        pop = SymmetricKey(b"ext-pop1", b"e" * 16)

        def token(iss: str, key) -> bytes:
            claims = Claims(
                iss=iss,
                sub=DEVICE_ID,
                aud=gw.config.rs.audience,
                exp=now + 600,
                iat=now,
                cti=os.urandom(8),
                cnf=cnf_mod.CnfKey(pop),
                scope=Scope.parse("/whoami:GET").encode(),
            )
            return mint(claims, key)

        async with device(gw, DEVICE_ID.encode(), DEVICE_PSK) as dev:
            assert (await dev.post("/token", b"\xa0")).code == Code.NOT_FOUND
            # an Encrypt0 token under the external AS-RS key, and a Sign1 one
            for key in (external.as_rs_key(), external.signing_key()):
                resp = await dev.post("/authz-info", token("as.example", key))
                assert resp.code == Code.CREATED
            # the same key but another issuer name: refused
            resp = await dev.post("/authz-info", token("someone-else", external.signing_key()))
            assert resp.code == Code.UNAUTHORIZED
            # and the token authorizes proofs like an embedded-AS token
            pd = ProofDevice(dev, pop, b"")
            resp = await pd.call()
            assert resp.code == Code.CONTENT, resp.payload
    finally:
        await gw.stop()
        gw.registry.close()
