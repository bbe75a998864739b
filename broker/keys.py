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
  {p}:run:R:lost       hash   vector id -> its attempts lost (their worker died in them), found by the claims
                              that started the next; a retry starts the count again
  {p}:run:R:failed     hash   vector id -> msgpack record of its failing final attempt
  {p}:run:R:agg        hash   aggregate counters kept as results land (field names: Agg, below)
  {p}:run:R:enqueuing  string held by the one `enqueue` writing run R's vectors: its owner's pid, host and
                              heartbeat (JSON), with a TTL the heartbeat renews
  {p}:run:R:retrying   set    vector ids a `retry` took out of their finals and has not queued yet (one cut
                              short leaves them: the next retry queues them)
  {p}:lease:R:V        string the worker running vector V, with a TTL its heartbeat renews
Global:
  {p}:runs             zset   run ids by creation time
  {p}:expiring         zset   run ids by expiry time (`enqueue --expires`), until every vector is final
  {p}:workers          zset   worker names by last heartbeat
  {p}:worker:W         hash   machine, devices, backend, health, current vector, heartbeat
  {p}:worker:W:chunk   string the chunk worker W is running (msgpack: run, machine, ids, its lease token,
                              heartbeat interval, its message's crashed ids, hops, tries), so a live worker
                              can queue it again when W is lost
  {p}:reclaiming       hash   a lost worker's chunk record (as above) -> msgpack [the lost worker's name, the
                              live worker queuing it again, until when]: taken over, not queued yet
  {p}:traces           zset   trace job uids by enqueue time (`sweepctl trace --model/--all`)
  {p}:traces:running   zset   trace job uids a worker claimed and has not finished, by claim time
  {p}:trace:U          hash   trace job U: model, machine, job (msgpack), state, worker, attempts, times,
                              outcome, merged (JSON: what `store pull` added, per store)
  {p}:trace:U:result   string msgpack result of trace job U (write-once: outcome, configs with counts)
  {p}:trace:U:lease    string the worker running trace job U, with a TTL its heartbeat renews
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

    def lost(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:lost"

    def failed(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:failed"

    def agg(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:agg"

    def enqueuing(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:enqueuing"

    def retrying(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:retrying"

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

    def reclaiming(self) -> str:
        return f"{self.prefix}:reclaiming"

    def traces(self) -> str:
        return f"{self.prefix}:traces"

    def traces_running(self) -> str:
        return f"{self.prefix}:traces:running"

    def trace(self, uid: str) -> str:
        return f"{self.prefix}:trace:{uid}"

    def trace_result(self, uid: str) -> str:
        return f"{self.prefix}:trace:{uid}:result"

    def trace_lease(self, uid: str) -> str:
        return f"{self.prefix}:trace:{uid}:lease"

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
            self.lost(run_id),
            self.failed(run_id),
            self.agg(run_id),
            self.enqueuing(run_id),
            self.retrying(run_id),
        ]

    FIELD_SEP = ":"  # record fields are vector id, FIELD_SEP, attempt (Lua steps get it as an argument)

    @staticmethod
    def record_field(vector_id: str, attempt: int) -> str:
        return f"{vector_id}{Keys.FIELD_SEP}{attempt}"

    @property
    def celery_prefix(self) -> str:
        """kombu's global_keyprefix: queues and bindings live under the same prefix."""
        return f"{self.prefix}:celery:"


class Agg:
    """Field names of a run's aggregate hash `{p}:run:R:agg`: broker/results.py writes them (in Lua, as
    results land), broker/reports/ reads them. A counter's name is its kind and its parts joined by SEP:

      done, t_first, t_last           vectors with a final status; first/last finish (unix s)
      s|STATUS  os|OP|STATUS  ms|MACHINE|STATUS      counts
      om|MACHINE|OP|STATUS                           counts per machine and op
      fb|SIG|STATUS|OP|MACHINE                       failure buckets: final non-PASS vectors per signature
      st|SIG  sx|SIG                                 a bucket's signature text and one example vector
      pmin|OP                         lowest PCC of an executed vector
      ph|OP|B                         PCC histogram, B = floor(10 * -log10(1 - pcc)), capped at 120
      b|BACKEND                       executed vectors per backend (emulated results say so)
      eh|OP|B                         e2e histogram, B = floor(8 * log2(ms * 1000)) (microseconds)
    """

    SEP = "|"
    DONE, T_FIRST, T_LAST = "done", "t_first", "t_last"
    STATUS = "s"
    OP_STATUS = "os"
    MACHINE_STATUS = "ms"
    MACHINE_OP_STATUS = "om"
    BUCKET = "fb"
    BUCKET_TEXT = "st"
    BUCKET_EXAMPLE = "sx"
    PCC_MIN = "pmin"
    PCC_HIST = "ph"
    E2E_HIST = "eh"
    BACKEND = "b"

    @staticmethod
    def prefix(kind: str) -> str:
        """What every field of `kind` starts with (Lua steps append the parts)."""
        return kind + Agg.SEP

    @staticmethod
    def field(kind: str, *parts: str) -> str:
        return Agg.SEP.join((kind, *parts))
