"""The device simulator: many simulated constrained devices driving an ACE
gateway over real DTLS, for load tests and conformance checks
(``acegw-sim``, ``docs/simulator.md``).

Modules: :mod:`~device_sim.device` (the sans-I/O device state machine) and
:mod:`~device_sim.device_state` (its parts), :mod:`~device_sim.dtls_client`
(DTLS-PSK client sessions on DTLSSocket, long keys on the DTLS engine's
client), :mod:`~device_sim.flood` (the half-open handshake flood),
:mod:`~device_sim.coap` (CoAP codec), :mod:`~device_sim.worker` (one asyncio
loop driving a slice of the devices, source addresses),
:mod:`~device_sim.scenario` (TOML scenarios, the shipped library in
``scenarios/``, devices.csv), :mod:`~device_sim.templates` (request bodies
from templates), :mod:`~device_sim.attacks` (attack kinds and their
expected answers), :mod:`~device_sim.stats` and :mod:`~device_sim.histogram`
(reports, per-route and per-interval statistics, merging),
:mod:`~device_sim.verdict` (checks, causes, hints),
:mod:`~device_sim.display` (live view, text report, CSV),
:mod:`~device_sim.html_report` and :mod:`~device_sim.cli`.

It is a black-box client of the gateway: it imports :mod:`tokens` and, for
keys tinydtls cannot take, the sans-I/O DTLS client of :mod:`dtls12`; never
``gateway``.
"""
