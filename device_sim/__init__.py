"""The device simulator: many simulated constrained devices driving an ACE
gateway over real DTLS, for load tests and conformance checks."""
