"""Configuration: defaults, the file ``acegw init`` writes, environment
overrides, and errors that name the key and the problem."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config import Config, load_config, parse_config
from gateway.errors import ConfigError
from gateway.runtime.config_docs import default_config_text, reference_markdown
from tokens.params import Alg

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acegw.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=env or {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text, env)
    assert exc.value.exit_status == 2
    return exc.value


def test_defaults(tmp_path: Path) -> None:
    c = load(tmp_path, "")
    assert (c.server.bind, c.server.port, c.server.workers) == ("::", 5684, 1)
    assert c.as_.enabled and c.as_.alg == Alg.ES256 and c.as_.token_lifetime == 3600
    assert c.audiences == ("acegw",) == (c.rs.audience,)
    assert c.registry.path == tmp_path / "registry.sqlite3"
    assert c.registry.master_key_file == tmp_path / "master.key"
    assert c.keys.dir == tmp_path / "keys"
    assert (c.metrics.enabled, c.metrics.host, c.metrics.port) == (True, "127.0.0.1", 9100)
    assert c.routes == () and c.rs.issuers == ()
    assert c.source == tmp_path / "acegw.toml"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.server.port = 1  # type: ignore[misc]


def test_default_file_parses_to_the_defaults(tmp_path: Path) -> None:
    from_text = load(tmp_path, default_config_text())
    empty = load(tmp_path, "")
    assert from_text == empty
    assert "[server]" in default_config_text() and "# [[routes]]" in default_config_text()


def test_full_example(tmp_path: Path) -> None:
    keys = tmp_path / "as.cbor"
    keys.write_bytes(b"\x80")
    c = load(
        tmp_path,
        """
[server]
bind = "0.0.0.0"
port = 0
workers = 2
[as]
audiences = ["a1", "a2"]
signing_alg = "EdDSA"
[rs]
audience = "gw1"
[[rs.issuers]]
name = "ext-as"
keys_file = "as.cbor"
[metrics]
listen = "[::1]:9200"
[logging]
level = "debug"
[audit]
path = "audit.log"
sample_success = 0.1
[[routes]]
prefix = "/temp/"
upstream = "http://127.0.0.1:8080/api/"
methods = ["get", "PUT"]
headers = { "X-Api-Key" = "k" }
[[routes]]
prefix = "/cfg"
upstream = "https://example.com"
""",
    )
    assert c.server.bind == "0.0.0.0" and c.server.workers == 2
    assert c.as_.alg == Alg.EDDSA and c.audiences == ("a1", "a2")
    assert c.rs.issuers[0].name == "ext-as" and Path(c.rs.issuers[0].keys_file) == keys
    assert (c.metrics.host, c.metrics.port) == ("::1", 9200)
    assert c.logging.level == "DEBUG"
    assert c.audit.path == str(tmp_path / "audit.log")
    r0, r1 = c.routes
    assert (r0.prefix, r0.upstream, r0.methods) == (
        "/temp",
        "http://127.0.0.1:8080/api",
        ("GET", "PUT"),
    )
    assert dict(r0.headers) == {"X-Api-Key": "k"}
    assert (r1.methods, r1.timeout, r1.max_body) == (("GET", "POST", "PUT", "DELETE"), 10.0, 65536)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[server]\nprot = 5684", "server.prot", "did you mean 'port'"),
        ("[sever]\nport = 1", "sever", "did you mean 'server'"),
        ("[server]\nport = 'abc'", "server.port", "expected an integer, got string 'abc'"),
        ("[server]\nport = true", "server.port", "expected an integer, got boolean"),
        ("[server]\nport = 5684.0", "server.port", "expected an integer, got float"),
        ("[server]\nport = 70000", "server.port", "between 0 and 65535, got 70000"),
        ("[server]\nbind = 'example.com'", "server.bind", "IP address literal"),
        ("server = 3", "server", "expected a table"),
        ("[as]\ntoken_lifetime = 1", "as.token_lifetime", "between 10 and 604800"),
        ("[as]\nsigning_alg = 'RS256'", "as.signing_alg", "one of ES256, EdDSA"),
        ("[as]\naudiences = 'x'", "as.audiences", "expected an array of strings"),
        ("[as]\nenabled = 'yes'", "as.enabled", "expected a boolean"),
        ("[as]\nenabled = false", "rs.issuers", "external-AS mode"),
        ("[logging]\nlevel = 'loud'", "logging.level", "one of DEBUG"),
        ("[audit]\nsample_success = 2", "audit.sample_success", "between 0 and 1"),
        ("[metrics]\nlisten = '9100'", "metrics.listen", "host:port"),
        ("[metrics]\nlisten = '::1:9100'", "metrics.listen", "brackets"),
        ("[registry]\npath = 'no/such/dir/reg.db'", "registry.path", "does not exist"),
        ("[dtls]\nmax_sessions = 10\nmax_handshakes = 20", "dtls.max_handshakes", "max_sessions"),
        (
            "[[rs.issuers]]\nname = 'x'\nkeys_file = 'missing.cbor'",
            "rs.issuers[0].keys_file",
            "does not exist",
        ),
        ("[[rs.issuers]]\nkeys_file = 'x'", "rs.issuers[0].name", "missing (required)"),
        ("[[routes]]\nprefix = '/a'", "routes[0].upstream", "missing (required)"),
        (
            "[[routes]]\nprefix = 'a'\nupstream = 'http://h'",
            "routes[0].prefix",
            "starting with '/'",
        ),
        ("[[routes]]\nprefix = '/a'\nupstream = 'ftp://h'", "routes[0].upstream", "http://"),
        (
            "[[routes]]\nprefix = '/a'\nupstream = 'http://h'\nmethods = ['BREW']",
            "routes[0].methods",
            "methods must be among",
        ),
        (
            "[[routes]]\nprefix = '/a'\nupstream = 'http://h'\ntimeout = 0",
            "routes[0].timeout",
            "between 0.1 and 600",
        ),
        (
            "[[routes]]\nprefix = '/a'\nupstream = 'http://h'\nverb = 1",
            "routes[0].verb",
            "unknown key",
        ),
        (
            "[[routes]]\nprefix = '/a'\nupstream = 'http://h'\n[[routes]]\nprefix = '/a/'\n"
            "upstream = 'http://i'",
            "routes[1].prefix",
            "duplicate",
        ),
        ("routes = 1", "routes", "expected an array of tables"),
    ],
)
def test_errors_name_the_key_and_problem(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    err = error(tmp_path, text)
    assert err.key == key
    assert f": {key}: " in str(err) and fragment in str(err)
    assert str(tmp_path / "acegw.toml") in str(err)


def test_secret_header_values_are_not_echoed(tmp_path: Path) -> None:
    err = error(
        tmp_path,
        "[[routes]]\nprefix = '/a'\nupstream = 'http://h'\n"
        'headers = { Authorization = "Bearer s3cr3t\\nX: y" }',
    )
    assert err.key == "routes[0].headers" and "s3cr3t" not in str(err)
    err = error(
        tmp_path, "[[routes]]\nprefix = '/a'\nupstream = 'http://h'\nheaders = { A = 12345 }"
    )
    assert "12345" not in str(err)


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        "ACEGW_SERVER_PORT": "5685",
        "ACEGW_LOGGING_JSON": "off",
        "ACEGW_AS_AUDIENCES": "a, b",
        "ACEGW_AS_TOKEN_LIFETIME": "600",
        "ACEGW_RS_LEEWAY": "2.5",
        "ACEGW_REGISTRY_PATH": "other.db",
        "ACEGW_MASTER_KEY": "not-a-config-key",  # the key itself, not an override
        "ACEGW_CONFIG": "/elsewhere.toml",
        "ACEGW_SIM_DEVICES": "9",  # another tool's variable
        "PATH": "/usr/bin",
    }
    c = load(tmp_path, "[server]\nport = 1\n[logging]\njson = true", env)
    assert c.server.port == 5685  # env beats the file
    assert c.logging.json is False
    assert c.audiences == ("a", "b")
    assert c.as_.token_lifetime == 600 and c.rs.leeway == 2.5
    assert c.registry.path == tmp_path / "other.db"


@pytest.mark.parametrize(
    ("var", "value", "key", "fragment"),
    [
        ("ACEGW_SERVER_PORT", "abc", "server.port", "expected an integer, got 'abc'"),
        ("ACEGW_SERVER_PORT", "99999", "server.port", "between 0 and 65535"),
        ("ACEGW_SERVER_PROT", "1", "server.prot", "did you mean 'port'"),
        ("ACEGW_LOGGING_JSON", "maybe", "logging.json", "expected a boolean"),
        ("ACEGW_RS_ISSUERS", "x", "rs.issuers", "cannot be set from the environment"),
        ("ACEGW_ROUTES_PREFIX", "/x", "routes", "cannot be set from the environment"),
    ],
)
def test_bad_env_override(tmp_path: Path, var: str, value: str, key: str, fragment: str) -> None:
    err = error(tmp_path, "", {var: value})
    assert err.key == key and var in str(err) and fragment in str(err)


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", env={})
    err = error(tmp_path, "[server\nport = 1")
    assert "not valid TOML" in str(err) and "line 1" in str(err)


def test_parse_config_from_mapping(tmp_path: Path) -> None:
    c = parse_config({"server": {"port": 7}}, base_dir=tmp_path, env={})
    assert c.server.port == 7 and c.source is None
    with pytest.raises(ConfigError, match=r"config: server\.port"):
        parse_config({"server": {"port": -1}}, base_dir=tmp_path, env={})


def test_metrics_off(tmp_path: Path) -> None:
    assert load(tmp_path, "[metrics]\nlisten = 'off'").metrics.enabled is False
    assert load(tmp_path, "[metrics]\nlisten = ''").metrics.enabled is False


def test_docs_reference_is_current() -> None:
    """docs/config.md carries the generated reference; regenerate it with
    ``python -c 'from gateway.runtime.config_docs import reference_markdown as r; print(r())'``."""
    text = DOCS.read_text()
    begin, end = "<!-- BEGIN GENERATED REFERENCE -->\n", "<!-- END GENERATED REFERENCE -->"
    assert begin in text and end in text
    generated = text.split(begin, 1)[1].split(end, 1)[0]
    assert generated.strip() == reference_markdown().strip()
