"""The audit log for operators: ``GET /api/v1/audit-events`` (the events are written by
``marketplace.audit.record`` in every service that writes)."""
