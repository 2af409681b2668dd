"""Running the gateway: the wiring of one worker (:mod:`.gateway`),
``acegw serve`` and its signals (:mod:`.serve`), the supervisor and its
worker processes (:mod:`.supervisor`, :mod:`.worker`), the one-instance port
claim and the ``acegw`` command (:mod:`.cli`)."""
