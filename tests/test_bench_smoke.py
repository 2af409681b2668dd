"""The gateway benchmarks run in their tiny mode so they cannot rot (the full
runs are not tests: the machines are shared and noisy)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module, keys",
    [
        # the make-bench driver: every bench/ script in its tiny mode (soak included);
        # it fails if any script fails, so one entry covers them all
        (
            "bench.run_all",
            [
                "vs_pycose",
                "vs_aiocoap",
                "vs_libcoap",
                "authz_mac0_ratio",
                "authz_es256_ratio",
                "proxy_ratio",
                "proxied_vs_aiocoap_bare",
                "workers2_speedup",
                "cpu_per_req_ratio",
                "backends_authz_mac0_pg_vs_sqlite",
                "backends_proxy_ratio_pg_vs_sqlite",
            ],
        ),
    ],
)
def test_benchmark_tiny_mode(module, keys, tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", module, "--tiny", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = proc.stdout.strip().splitlines()[-1]
    assert result.startswith("RESULT ")
    values = dict(item.split("=", 1) for item in result.split()[1:])
    for key in keys:
        assert re.fullmatch(r"[0-9.]+", values[key]), (key, values[key])
        assert float(values[key]) > 0, (key, result, proc.stdout[-3000:])
    assert out.read_text().strip().startswith("{")
    # every figure of bench.gateway_dtls's own RESULT line is measured in the
    # tiny mode too (a NaN is null in the JSON, a 0 is a figure not taken)
    dtls = json.loads(out.read_text())["scripts"]["gateway_dtls"]["result"]
    assert dtls["cid_rebind_handshakes"] == 0, dtls
    for key, value in dtls.items():
        if key != "cid_rebind_handshakes":
            assert isinstance(value, float) and value > 0, (key, dtls)


def test_median_ratio_leaves_out_rounds_with_a_nan_or_zero() -> None:
    from bench._gateway import median_ratio

    assert median_ratio([10, 10, 10], [5, math.nan, 5]) == 2.0  # NaN denominator
    assert median_ratio([10, math.nan, 10], [5, 5, 5]) == 2.0  # NaN numerator
    assert median_ratio([10, 10, 10], [5, 0, 5]) == 2.0  # zero denominator
    assert math.isnan(median_ratio([1.0], [math.nan]))  # no round left


def test_gateway_dtls_fails_on_a_figure_it_did_not_measure() -> None:
    from bench.gateway_dtls import _NEEDS, _unmeasured

    measured = dict.fromkeys(_NEEDS, 1.5)
    servers = ("ours", "tinydtls", "aiocoap", "libcoap")
    assert _unmeasured(measured, servers) == []
    assert _unmeasured({**measured, "vs_tinydtls": math.nan}, servers) == ["vs_tinydtls"]
    assert _unmeasured({**measured, "handshakes_per_s_flood": 0.0}, servers) == [
        "handshakes_per_s_flood"
    ]
    # a peer left out with --servers: its ratio is n/a, not a failure
    assert _unmeasured({**measured, "vs_libcoap": math.nan}, ("ours", "tinydtls")) == []


def test_backends_fails_a_run_whose_figure_is_missing() -> None:
    """bench.backends: a NaN, zero or missing figure fails the run instead of
    dropping its pair from the median."""
    from bench.backends import BackendBenchError, _figure

    assert _figure(1.25, "bench.authz mac0 ratio", "0-sqlite") == 1.25
    for bad in (math.nan, 0.0, None, math.inf):
        with pytest.raises(BackendBenchError, match="not measured in run 0-postgresql"):
            _figure(bad, "bench.proxy proxy_ratio", "0-postgresql")


def test_fleet_memory_figures_are_nan_when_unmeasurable() -> None:
    """bench.fleet: no device served, or RSS growth below what RSS can tell
    (or negative), gives NaN (the run fails), never a figure."""
    from bench.fleet import RSS_RESOLUTION, growth_per

    assert growth_per(RSS_RESOLUTION * 10, 10) == RSS_RESOLUTION
    assert math.isnan(growth_per(RSS_RESOLUTION * 10, 0))  # no device served
    assert math.isnan(growth_per(RSS_RESOLUTION - 1, 1))
    assert math.isnan(growth_per(-4096, 100))
