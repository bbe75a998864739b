"""The control plane: Celery app and queue topology, Redis key schema, coordinator, result store,
reports and the `sweepctl` CLI."""
