"""The embedded ACE authorization server (RFC 9200 §5.8, §5.9): the /token
decision (:mod:`.token_endpoint`) and the AS keys with their rotation
(:mod:`.keystore`). Sans-I/O; the CoAP resources are in :mod:`gateway.coap`."""
