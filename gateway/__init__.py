"""The ACE gateway service: DTLS-PSK CoAP server, authorization server
(RFC 9200 /token, /introspect), resource server (/authz-info, proxied
routes), device registry, configuration and CLI."""
