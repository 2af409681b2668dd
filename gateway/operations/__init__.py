"""What the operator sees: Prometheus metrics (:mod:`.metrics` format,
:mod:`.gateway_metrics` what is counted), the admin HTTP port
(:mod:`.admin_http`), the audit trail (:mod:`.audit`) and the log format
(:mod:`.logs`)."""
