"""The device simulator: many simulated constrained devices driving an ACE
gateway over real DTLS, for load tests and conformance checks
(``acegw-sim``, ``docs/simulator.md``).

Modules: :mod:`~device_sim.device` (the sans-I/O device state machine) and
:mod:`~device_sim.device_state` (its parts), :mod:`~device_sim.dtls_client`
(DTLS-PSK client sessions on DTLSSocket), :mod:`~device_sim.coap` (CoAP
codec), :mod:`~device_sim.worker` (one asyncio loop driving a slice of the
devices), :mod:`~device_sim.scenario` (TOML scenarios, devices.csv),
:mod:`~device_sim.attacks` (attack kinds and their expected answers),
:mod:`~device_sim.stats` and :mod:`~device_sim.histogram` (reports, merging,
verdict), :mod:`~device_sim.display` and :mod:`~device_sim.cli`.

It is a black-box client of the gateway: it imports :mod:`tokens`, never
``gateway``.
"""
