"""The CoAP side of the gateway (aiocoap): the root resource
(:mod:`.service_site`) and the ACE endpoints' resources
(:mod:`.ace_resources`)."""
