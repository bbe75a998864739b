"""The Celery app: Redis broker, one queue per machine type, msgpack only.

Settings and why (DESIGN.md §4):
* msgpack only for tasks and results; the app refuses to exist if pickle is accepted.
* acks_late + reject on worker loss: a message is acked only after its chunk is recorded, so a
  killed worker's chunk is redelivered (finished vectors are skipped by their final records).
* prefetch disabled: a solo worker holds one chunk, never a backlog another device could run.
* Celery results ignored and events off: we write our own records. Remote control stays on (Celery's
  default): `celery inspect` and Flower reach a worker through its pidbox, which kombu keeps under
  the key prefix like the queues (the fanout channel and the reply lists). `sweepctl worker --events`
  adds task events and worker heartbeats for Flower.
* visibility_timeout above the worst case from delivery to ack (a whole chunk of slow vectors);
  leases with heartbeats find dead workers far sooner.
* task_create_missing_queues=False and a router built from the machine profiles: a chunk goes
  to its machine's queue or nowhere.

`broker.app.app` is the app of the deployment this environment points at, for Celery's own tools
(`celery -A broker.app inspect ping`, `celery -A broker.app flower`). It is built on first use, not
at import: importing this module stays cheap for the worker and the CLI, and never connects.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from broker.keys import DEFAULT_PREFIX, Keys
from sweeps.profiles import PROFILES, get_profile

RUN_CHUNK = "sweepctl.run_chunk"
TRACE_MODEL = "sweepctl.trace_model"  # a model test under the tracer (broker/traces/jobs.py, workers/tracejob.py)
DEFAULT_VISIBILITY_TIMEOUT = 6 * 3600


class PickleRefused(RuntimeError):
    """The configuration would accept pickle: arbitrary code execution from the queue."""


def machine_queue(name: str) -> Queue:
    """A machine's queue, bound to an exchange of its own name with its own name as routing key.
    A bare Queue(name) gets Celery's default exchange and routing key (the first queue's name), so
    every machine's queue would be bound under `sweeps.n150` and a message published by routing key
    (Flower, another client) would reach every machine; `inspect active_queues` showed exactly that."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def route_chunk(name: str, args: Any, kwargs: dict[str, Any] | None, options: Any, task: Any = None, **_: Any):
    """Celery router: a chunk (or a trace job) goes to the queue of the machine it needs."""
    if name in (RUN_CHUNK, TRACE_MODEL) and kwargs and "machine" in kwargs:
        return {"queue": get_profile(kwargs["machine"]).queue}
    return None


def refuse_pickle(conf: Any) -> None:
    accepted = {str(c).lower() for c in list(conf.accept_content or []) + list(conf.result_accept_content or [])}
    serializers = {str(s).lower() for s in (conf.task_serializer, conf.result_serializer, conf.event_serializer)}
    if any("pickle" in c for c in accepted | serializers):
        raise PickleRefused("sweepctl refuses to start: the Celery configuration accepts pickle")


def make_app(redis_url: str, keys: Keys, visibility_timeout: int | None = None) -> Celery:
    """`visibility_timeout` defaults to $SWEEPCTL_VISIBILITY_TIMEOUT, else 6 h."""
    if visibility_timeout is None:
        visibility_timeout = int(os.environ.get("SWEEPCTL_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT))
    app = Celery("sweepctl", broker=redis_url, set_as_current=False)
    app.conf.update(
        accept_content=["msgpack"],
        result_accept_content=["msgpack"],
        task_serializer="msgpack",
        result_serializer="msgpack",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        worker_send_task_events=False,
        event_serializer="msgpack",  # events (`--events`, Flower) like everything else on the wire
        task_send_sent_event=False,
        task_create_missing_queues=False,
        task_queues=[machine_queue(profile.queue) for profile in PROFILES.values()],
        task_default_queue=next(iter(PROFILES.values())).queue,
        task_routes=(route_chunk,),
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            "global_keyprefix": keys.celery_prefix,
            # kombu sweeps for expired unacked messages every interval x throttle seconds (100 s by
            # default); a short visibility timeout (tests, small deployments) wants a short sweep
            "unacked_restore_interval": 1 if visibility_timeout < 600 else 10,
            "unacked_restore_throttle": 1 if visibility_timeout < 600 else 10,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    refuse_pickle(app.conf)
    return app


def from_environment() -> Celery:
    """The app of the deployment every sweepctl command here would talk to: `$SWEEPCTL_REDIS_URL`
    with `$SWEEPCTL_PREFIX`, else the embedded Redis of `sweepctl up` with the prefix it was started
    with. Raises InputError when there is neither."""
    from broker import embedded

    url = embedded.resolve_url(None)
    state = {} if os.environ.get("SWEEPCTL_REDIS_URL") else embedded.read_state() or {}
    prefix = os.environ.get("SWEEPCTL_PREFIX") or state.get("prefix") or DEFAULT_PREFIX
    return make_app(url, Keys(prefix))


_module_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    """`broker.app.app`, built on first use (PEP 562). Celery's CLI reads it for `-A broker.app`;
    without a Redis to point at, that is one line on stderr and exit 2, as for every sweepctl command."""
    global _module_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _module_app is None:
        from tracer.errors import InputError

        try:
            _module_app = from_environment()
        except InputError as exc:
            print(f"sweepctl: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    return _module_app
