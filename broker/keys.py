"""The Redis key schema: the only module that knows how sweepctl's keys are spelled.

Every key starts with a configurable prefix (`SWEEPCTL_PREFIX`, default `sweepctl`) so two teams
can share one Redis; Celery's own keys get the same prefix through kombu's `global_keyprefix`.

Per run `R`:
  {p}:run:R            hash   the run record (meta JSON, stored vectors per machine, state, publishing while
                              an enqueue writes)
  {p}:run:R:vectors    hash   vector id -> msgpack vector (write-once: re-enqueue adds nothing twice)
  {p}:run:R:final      hash   vector id -> final status (write-once)
  {p}:run:R:records    hash   "vector id:attempt" -> msgpack record (write-once, one per attempt)
  {p}:run:R:attempts   hash   vector id -> attempts started
  {p}:run:R:failed     hash   vector id -> msgpack record of its failing final attempt
  {p}:run:R:agg        hash   aggregate counters kept as results land (see broker/results.py)
  {p}:run:R:enqueuing  string held by the one `enqueue` writing run R's vectors: its owner's pid, host and
                              heartbeat (JSON), with a TTL the heartbeat renews
  {p}:lease:R:V        string the worker running vector V, with a TTL its heartbeat renews
Global:
  {p}:runs             zset   run ids by creation time
  {p}:expiring         zset   run ids by expiry time (`enqueue --expires`), until every vector is final
  {p}:workers          zset   worker names by last heartbeat
  {p}:worker:W         hash   machine, devices, backend, health, current vector, heartbeat
  {p}:worker:W:chunk   string the chunk worker W is running (msgpack: run, machine, ids, its lease token,
                              heartbeat interval), so a live worker can queue it again when W is lost
  {p}:validation3:T:M  hash   tensor digest (sweeps.validate.tensor_digest) -> reason, "" when valid;
                              per ttnn version T and machine M
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_PREFIX = "sweepctl"


def default_prefix() -> str:
    return os.environ.get("SWEEPCTL_PREFIX", DEFAULT_PREFIX)


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def vectors(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:vectors"

    def final(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:final"

    def records(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:records"

    def attempts(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:attempts"

    def failed(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:failed"

    def agg(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:agg"

    def enqueuing(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:enqueuing"

    def lease(self, run_id: str, vector_id: str) -> str:
        return f"{self.prefix}:lease:{run_id}:{vector_id}"

    def lease_prefix(self, run_id: str) -> str:
        """lease(run_id, V) is this followed by V (Lua steps that check many leases build them so)."""
        return self.lease(run_id, "")

    def runs(self) -> str:
        return f"{self.prefix}:runs"

    def expiring(self) -> str:
        return f"{self.prefix}:expiring"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def held(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}:chunk"

    def validation(self, ttnn_version: str, machine: str) -> str:
        return f"{self.prefix}:validation3:{ttnn_version}:{machine}"  # 3: grids per dispatch, L1_SMALL budget

    def run_keys(self, run_id: str) -> list[str]:
        """Every key a run owns (for deletion)."""
        return [
            self.run(run_id),
            self.vectors(run_id),
            self.final(run_id),
            self.records(run_id),
            self.attempts(run_id),
            self.failed(run_id),
            self.agg(run_id),
            self.enqueuing(run_id),
        ]

    FIELD_SEP = ":"  # record fields are vector id, FIELD_SEP, attempt (Lua steps get it as an argument)

    @staticmethod
    def record_field(vector_id: str, attempt: int) -> str:
        return f"{vector_id}{Keys.FIELD_SEP}{attempt}"

    @property
    def celery_prefix(self) -> str:
        """kombu's global_keyprefix: queues and bindings live under the same prefix."""
        return f"{self.prefix}:celery:"
