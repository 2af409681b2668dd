"""The ``acegw`` command, run in-process through ``main([...])`` and once
through the installed console script."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from gateway.authorization_server.keystore import Keystore
from gateway.config import load_config
from gateway.registry.masterkey import ENV_VAR
from gateway.registry.registry import GENERATED_PSK_BYTES, GENERATED_PSK_CHARS, Registry
from gateway.runtime.cli import main
from tokens.cwt import Claims, mint
from tokens.keys import Ec2Key


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("ACEGW_"):
            monkeypatch.delenv(var)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def gw(tmp_path: Path) -> Path:
    d = tmp_path / "gw"
    code, out = run("init", "--dir", str(d))
    assert code == 0, out
    return d


def registry(d: Path) -> Registry:
    return Registry.from_config(load_config(d / "acegw.toml", env={}), env={})


def psk_from(out: str) -> bytes:
    line = next(x for x in out.splitlines() if x.startswith("psk_hex: "))
    return bytes.fromhex(line.split(": ", 1)[1])


def test_init_creates_a_working_directory(gw: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (gw / "acegw.toml").is_file()
    assert (gw / "master.key").stat().st_mode & 0o777 == 0o600
    assert (gw / "registry.sqlite3").stat().st_mode & 0o077 == 0
    assert (gw / "keys").stat().st_mode & 0o777 == 0o700
    config = load_config(gw / "acegw.toml", env={})
    assert len(Keystore.from_config(config).list()) == 2
    with registry(gw) as reg:
        assert reg.count() == 0
    code, _ = run("init", "--dir", str(gw))
    assert code == 1
    assert "already" in capsys.readouterr().err


def test_init_without_options_makes_this_directory_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's first steps: `acegw init`, then commands with no --dir."""
    monkeypatch.chdir(tmp_path)
    code, out = run("init")
    assert code == 0, out
    assert (tmp_path / "acegw.toml").is_file() and (tmp_path / "master.key").is_file()
    assert run("clients", "add", "dev-1", "--scope", "/whoami:GET")[0] == 0
    code, out = run("clients", "list")
    assert code == 0 and "dev-1" in out


def test_init_with_master_key_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "22" * 32)
    d = tmp_path / "envgw"
    code, out = run("init", "--dir", str(d))
    assert code == 0 and ENV_VAR in out
    assert not (d / "master.key").exists()
    assert run("clients", "add", "x", "--scope", "/a:GET", "--dir", str(d))[0] == 0
    monkeypatch.delenv(ENV_VAR)
    assert run("clients", "list", "--dir", str(d))[0] == 2  # no key file, no env var


def test_client_lifecycle(gw: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--dir", str(gw)]
    code, out = run("clients", "add", "dev0", "--scope", "/temp:GET", *d)
    assert code == 0
    assert len(psk_from(out)) == GENERATED_PSK_BYTES and "psk: " not in out  # 256 random bits
    assert run("clients", "delete", "dev0", *d)[0] == 0
    code, out = run(
        "clients", "add", "dev1", "--scope", "/temp:GET /cfg:GET,PUT", "--audience", "acegw",
        "--printable", *d,
    )  # fmt: skip
    assert code == 0
    psk = psk_from(out)
    assert len(psk) == GENERATED_PSK_CHARS and f"psk: {psk.decode()}" in out
    with registry(gw) as reg:
        assert reg.psk_for("dev1") == psk
        assert reg.get("dev1").audiences == ("acegw",)

    code, out = run("clients", "show", "dev1", *d)
    assert code == 0 and "/temp:GET /cfg:GET,PUT" in out
    assert psk.decode() not in out and psk.hex() not in out
    code, out = run("clients", "show", "dev1", "--show-psk", *d)
    assert code == 0 and psk.decode() in out and psk.hex() in out
    code, out = run("clients", "show", "dev1", "--json", *d)
    assert json.loads(out)["scope"] == "/temp:GET /cfg:GET,PUT" and psk.hex() not in out

    code, out = run("clients", "list", *d)
    assert code == 0 and "dev1" in out and psk.decode() not in out
    code, out = run("clients", "list", "--json", *d)
    assert [c["id"] for c in json.loads(out)] == ["dev1"]

    assert run("clients", "disable", "dev1", *d)[0] == 0
    with registry(gw) as reg:
        assert reg.psk_for("dev1") is None
    assert run("clients", "enable", "dev1", *d)[0] == 0

    code, out = run("clients", "rotate-psk", "dev1", *d)
    new = psk_from(out)
    assert code == 0 and new != psk
    with registry(gw) as reg:
        assert reg.psk_for("dev1") == new

    code, out = run("clients", "update", "dev1", "--scope", "/temp:GET", *d)
    assert code == 0
    code, out = run("clients", "add", "dev2", "--psk", "text-psk", "--scope", "/a:GET", *d)
    assert code == 0 and "psk" not in out.replace("dev2", "")  # a given PSK is not echoed
    code, out = run("clients", "add", "dev3", "--psk-hex", "00ff10", "--scope", "/a:GET", *d)
    with registry(gw) as reg:
        assert reg.psk_for("dev2") == b"text-psk"
        assert reg.psk_for("dev3") == b"\x00\xff\x10"
        assert reg.get("dev1").scope == "/temp:GET"

    assert run("clients", "delete", "dev1", *d)[0] == 0
    capsys.readouterr()
    code, _ = run("clients", "show", "dev1", *d)
    err = capsys.readouterr().err
    assert code == 1 and "no client 'dev1'" in err and "Traceback" not in err


def test_public_key_option(gw: Path, tmp_path: Path) -> None:
    key = Ec2Key.generate(b"dk")
    cbor_file = tmp_path / "dev.cose"
    cbor_file.write_bytes(key.public().encode())
    hex_file = tmp_path / "dev.hex"
    hex_file.write_text(key.public().encode().hex() + "\n")
    d = ["--dir", str(gw)]
    assert (
        run("clients", "add", "a", "--scope", "/x:GET", "--public-key", str(cbor_file), *d)[0] == 0
    )
    assert (
        run("clients", "add", "b", "--scope", "/x:GET", "--public-key", str(hex_file), *d)[0] == 0
    )
    with registry(gw) as reg:
        assert reg.get("a").public_key == reg.get("b").public_key == key.public().encode()
    priv = tmp_path / "priv.cose"
    priv.write_bytes(key.encode(include_private=True))
    assert run("clients", "add", "c", "--scope", "/x:GET", "--public-key", str(priv), *d)[0] == 2


def test_bulk_add_writes_csv(gw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_csv = tmp_path / "devices.csv"
    code, out = run(
        "clients",
        "bulk-add",
        "--count",
        "50",
        "--prefix",
        "s-",
        "--scope",
        "/temp:GET,PUT",
        "--out",
        str(out_csv),
        "--dir",
        str(gw),
    )
    assert code == 0 and "50 clients" in out
    assert out_csv.stat().st_mode & 0o777 == 0o600
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "psk_hex", "scope"]
    assert len(rows) == 51 and rows[1][0] == "s-0000" and rows[1][2] == "/temp:GET,PUT"
    with registry(gw) as reg:
        assert reg.count() == 50
        for cid, psk_hex, _ in rows[1::7]:
            assert reg.psk_for(cid) == bytes.fromhex(psk_hex)
    # never overwrites a file, and then registers nothing
    code, _ = run(
        "clients",
        "bulk-add",
        "--count",
        "5",
        "--prefix",
        "t-",
        "--scope",
        "/a:GET",
        "--out",
        str(out_csv),
        "--dir",
        str(gw),
    )
    assert code == 1 and "already exists" in capsys.readouterr().err
    with registry(gw) as reg:
        assert reg.count() == 50


def test_usage_errors_exit_2(gw: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run()[0] == 2
    assert run("clients", "add", "x", "--dir", str(gw))[0] == 2  # --scope missing
    assert (
        run(
            "clients",
            "bulk-add",
            "--count",
            "many",
            "--prefix",
            "p",
            "--scope",
            "s",
            "--out",
            "-",
            "--dir",
            str(gw),
        )[0]
        == 2
    )
    assert run("clients", "add", "bad id", "--scope", "/a:GET", "--dir", str(gw))[0] == 2
    assert run("tokens", "revoke", "zz", "--dir", str(gw))[0] == 2
    assert run("clients", "add", "x", "--scope", "/a:BREW", "--dir", str(gw))[0] == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err
    assert run("--help")[0] == 0


def test_config_errors_exit_2(
    gw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'x'\n")
    assert run("clients", "list", "--config", str(bad))[0] == 2
    assert "server.port" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert run("clients", "list")[0] == 2
    assert "acegw init" in capsys.readouterr().err
    monkeypatch.setenv(ENV_VAR, "11" * 32)  # not the key the registry was made with
    assert run("clients", "list", "--dir", str(gw))[0] == 2
    err = capsys.readouterr().err
    assert "master key" in err and "11" * 32 not in err
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("ACEGW_CONFIG", str(gw / "acegw.toml"))
    assert run("clients", "list")[0] == 0


def test_tokens_revoke(gw: Path) -> None:
    code, out = run("tokens", "revoke", "a1b2", "--exp", "4102444800", "--dir", str(gw))
    assert code == 0 and "a1b2" in out
    code, _ = run("token", "revoke", "c3", "--dir", str(gw))  # default exp
    assert code == 0
    with registry(gw) as reg:
        assert reg.is_revoked(b"\xa1\xb2") and reg.is_revoked(b"\xc3")
        assert dict(reg.revoked())[b"\xa1\xb2"] == 4102444800.0
    code, out = run("tokens", "revoked", "--dir", str(gw))
    assert "a1b2" in out and "c3" in out


def test_keys_commands(gw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--dir", str(gw)]
    ks = Keystore(gw / "keys")
    old = ks.signing_key().kid.hex()
    code, out = run("keys", "list", *d)
    assert code == 0 and old in out and "current" in out
    code, out = run("keys", "rotate", *d)
    assert code == 0
    ks.refresh()
    new = ks.signing_key().kid.hex()
    assert new != old and new in out
    capsys.readouterr()
    assert run("keys", "retire", new, *d)[0] == 1  # the current key
    assert "rotate first" in capsys.readouterr().err
    assert run("keys", "retire", old, *d)[0] == 2  # asks for --yes
    assert "--yes" in capsys.readouterr().err
    assert run("keys", "retire", old, "--yes", *d)[0] == 0
    code, out = run("keys", "list", "--json", *d)
    assert {e["kid"]: e["status"] for e in json.loads(out)}[old] == "retired"
    assert run("keys", "rotate", "--as-rs", "--alg", "EdDSA", *d)[0] == 0
    exported = tmp_path / "pub.cbor"
    assert run("keys", "export", "--out", str(exported), *d)[0] == 0
    assert exported.stat().st_size > 0
    assert ks.as_rs_key().secret not in exported.read_bytes()


def test_token_decode_shows_claims_without_secrets(tmp_path: Path) -> None:
    key = Ec2Key.generate(b"as1")
    token = mint(
        Claims(iss="acegw", aud="gw", exp=2000000000, cti=b"\x01\x02", scope="/t:GET"), key
    )
    code, out = run("token", "decode", token.hex())
    assert code == 0
    shown = json.loads(out)
    assert shown["kid"] == b"as1".hex()
    assert shown["claims"]["iss"] == "acegw"
    f = tmp_path / "tok.bin"
    f.write_bytes(token)
    code, out2 = run("tokens", "decode", str(f))
    assert code == 0 and json.loads(out2) == shown
    assert run("token", "decode", "a0")[0] == 1  # not a token


def test_serve_calls_gateway_server(
    gw: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []
    fake = types.ModuleType("gateway.runtime.serve")

    async def serve(config: object) -> int:
        seen.append(config)
        return 0

    fake.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.runtime.serve", fake)
    assert run("serve", "--dir", str(gw))[0] == 0
    assert seen[0].source == (gw / "acegw.toml").absolute()
    monkeypatch.setitem(sys.modules, "gateway.runtime.serve", None)  # module absent
    assert run("serve", "--dir", str(gw))[0] == 1
    err = capsys.readouterr().err
    assert "gateway.runtime.serve" in err and "Traceback" not in err


def test_console_script(gw: Path) -> None:
    exe = Path(sys.executable).parent / "acegw"
    assert exe.exists(), "run: .venv/bin/pip install -e ."
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACEGW_")}
    done = subprocess.run(
        [str(exe), "clients", "add", "cli-dev", "--scope", "/t:GET", "--dir", str(gw)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "psk_hex: " in done.stdout
    done = subprocess.run(
        [str(exe), "clients", "show", "nobody", "--dir", str(gw)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("acegw: error:") and "Traceback" not in done.stderr


def test_bans_lift_needs_a_target_and_a_real_address(tmp_path):
    state = tmp_path / "s"
    assert main(["init", "--dir", str(state)], out=io.StringIO()) == 0
    for argv in (
        ["bans", "lift"],
        ["bans", "lift", "--all", "--client", "acc-1"],
        ["bans", "lift", "--address", "not-an-ip"],
        ["bans", "lift", "--kid", "zz"],
    ):
        assert main([*argv, "--dir", str(state)], out=io.StringIO()) == 2, argv
    out = io.StringIO()
    assert main(["bans", "lift", "--address", "192.0.2.7", "--dir", str(state)], out=out) == 0
    assert "recorded" in out.getvalue()


def test_bans_list_says_when_no_gateway_answers(tmp_path, monkeypatch, capsys):
    state = tmp_path / "s"
    assert main(["init", "--dir", str(state)], out=io.StringIO()) == 0
    monkeypatch.setenv("ACEGW_METRICS_LISTEN", "127.0.0.1:1")
    assert main(["bans", "list", "--dir", str(state)], out=io.StringIO()) == 1
    assert "is acegw serve running?" in capsys.readouterr().err
    monkeypatch.setenv("ACEGW_METRICS_LISTEN", "off")
    assert main(["bans", "list", "--dir", str(state)], out=io.StringIO()) == 2
