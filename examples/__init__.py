"""Runnable examples around the gateway: ``make run``'s demo (:mod:`.demo`)
and the demo HTTP upstream (:mod:`.demo_upstream`)."""
