"""The ACE gateway service (docs/design.md "Inside the gateway"): the authorization server
(:mod:`.authorization_server`), the resource server (:mod:`.resource_server`),
the client registry (:mod:`.registry`), the CoAP adapter (:mod:`.coap`), the
DTLS transport (:mod:`.dtls`), the HTTP reverse proxy (:mod:`.proxy`), the
operator's view (:mod:`.operations`) and what runs it all (:mod:`.runtime`).
The configuration schema (:mod:`.config`) and the error root (:mod:`.errors`)
are shared by every part."""
