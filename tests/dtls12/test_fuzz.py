"""Fuzzing of record and handshake parsing (hypothesis, and a bounded
coverage-guided atheris run): any input parses or raises the engine's own
ParseError; the engine itself never raises on peer input. Plus the replay
window and the reassembler against simple models."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtls12 import wire
from dtls12.errors import AlertError
from dtls12.reassembly import Reassembler
from dtls12.replay import WINDOW_WIDTH, ReplayWindow

from .fuzz_target import engine_input, parsers, stages

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_STAGES = stages()


@FUZZ
@given(st.binary(max_size=600))
def test_parsers_return_or_raise_parse_error(data: bytes) -> None:
    parsers(data)


@FUZZ
@given(st.binary(max_size=600))
def test_engine_never_raises_on_arbitrary_datagrams(data: bytes) -> None:
    for engine, _ in _STAGES:
        engine_input(engine, data)


@FUZZ
@given(
    st.integers(0, 3),
    st.integers(0, 7),
    st.lists(st.tuples(st.integers(0, 1500), st.integers(0, 255)), max_size=6),
    st.integers(0, 1500),
)
def test_engine_never_raises_on_mutated_real_datagrams(
    stage: int, which: int, flips: list[tuple[int, int]], cut: int
) -> None:
    engine, seeds = stages()[stage]
    seed = bytearray(seeds[which % len(seeds)])
    for position, value in flips:
        if seed:
            seed[position % len(seed)] = value
    engine_input(engine, bytes(seed[: cut or None]))


@FUZZ
@given(st.lists(st.integers(0, wire.MAX_SEQUENCE), max_size=50))
def test_replay_window_matches_a_model(sequences: list[int]) -> None:
    window = ReplayWindow()
    seen: set[int] = set()
    for sequence in sequences:
        newest = max(seen, default=-1)
        fresh = sequence not in seen and sequence > newest - WINDOW_WIDTH
        assert window.is_fresh(sequence) is fresh
        if fresh:
            assert window.commit(sequence) is (sequence > newest)
            seen.add(sequence)


def test_replay_window_gap_of_2_to_the_48_allocates_nothing_large() -> None:
    window = ReplayWindow()
    window.commit(0)
    tracemalloc.start()
    try:
        window.commit(wire.MAX_SEQUENCE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024
    assert not window.is_fresh(wire.MAX_SEQUENCE) and not window.is_fresh(0)
    assert window.is_fresh(wire.MAX_SEQUENCE - 1)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 8), st.integers(0, 40), st.integers(0, 40), st.integers(1, 2)),
        max_size=40,
    )
)
def test_reassembler_stays_in_budget_and_delivers_only_whole_messages(
    fragments: list[tuple[int, int, int, int]],
) -> None:
    reassembler = Reassembler(0, max_bytes=64, max_message=40, window=4)
    messages = {seq: bytes((seq,)) * (10 + seq * 3) for seq in range(9)}
    delivered = []
    for seq, start, size, kind in fragments:
        body = messages[seq]
        start = min(start, len(body))
        end = min(start + size, len(body))
        fragment = wire.HandshakeFragment(kind, len(body), seq, start, body[start:end])
        try:
            ready = reassembler.add(fragment)
        except AlertError:
            continue
        assert reassembler.buffered_bytes <= 64
        delivered += ready
    for position, (_, seq, body) in enumerate(delivered):
        assert seq == position and body == messages[seq]


def test_bounded_coverage_guided_run_with_atheris(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, (_, seeds) in enumerate(_STAGES):
        for m, seed in enumerate(seeds):
            (corpus / f"seed-{n}-{m}").write_bytes(seed)
    result = subprocess.run(
        [
            sys.executable, "-m", "tests.dtls12.fuzz_target",
            "-max_total_time=6", "-seed=23", "-rss_limit_mb=1024", str(corpus),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    done = [line for line in log.splitlines() if line.startswith("Done ")]
    assert done, log[-2000:]
    assert int(done[-1].split()[1]) > 500, done  # it really ran
