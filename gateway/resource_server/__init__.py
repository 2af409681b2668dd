"""The ACE resource server (RFC 9200 §5.10, RFC 9202): token intake
(/authz-info, :mod:`.token_intake`) and the held tokens (:mod:`.token_store`),
the per-request authorizer (:mod:`.authorizer`) and what it hands the
resources (:mod:`.auth_context`), rate limits and the lockout. Sans-I/O
(``now`` passed in)."""
