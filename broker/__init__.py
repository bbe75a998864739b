"""The control plane (Celery app, Redis key schema, coordinator, result store, lifecycle, take-over,
worker names, embedded Redis); the reports live in broker/reports/ and the `sweepctl` CLI in broker/cli/."""
