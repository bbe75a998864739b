"""Host validation of traced tensors: is this config well formed on this machine?

Checks, in order: the memory config rebuilds exactly; the shard grid fits the machine's compute
grid; ttnn's own host `TensorSpec` accepts shape + dtype + layout + memory config (its TT_FATAL
message becomes the reason); per-core shard bytes fit the machine's usable L1 (ttnn does not
check capacity on the host). A config that fails is INVALID: never sent to a device, never
counted as a failure. ttnn calls run in a child process because some kill it instead of raising.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson

from sweeps.profiles import L1_SMALL_SIZE, MachineProfile, get_profile
from tracer.args import is_unparsed

# Bytes per 32x32 tile and per element (ttnn.tile_size / element_size, ttnn_api_facts.md §2).
TILE_BYTES = {
    "BFLOAT16": 2048,
    "BFLOAT8_B": 1088,
    "BFLOAT4_B": 576,
    "FLOAT32": 4096,
    "UINT32": 4096,
    "INT32": 4096,
    "UINT16": 2048,
    "UINT8": 1024,
    "INT8": 1024,
    "FP8_E4M3": 1024,
}
ELEMENT_BYTES = {
    "BFLOAT16": 2,
    "FLOAT32": 4,
    "UINT32": 4,
    "INT32": 4,
    "UINT16": 2,
    "UINT8": 1,
    "INT8": 1,
    "FP8_E4M3": 1,
}
L1_ALIGNMENT = 16


def tensor_key(tensor: dict[str, Any]) -> str:
    """What host validation of a tensor depends on (shape, dtype, layout, memory config) as sorted
    JSON: verdicts are cached under it, and `orjson.loads` of it is the tensor to check."""
    fields = {k: tensor.get(k) for k in ("shape", "dtype", "layout", "memory_config")}
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()


DIGEST_SIZE = 12


def tensor_digest(key: str) -> bytes:
    """12 bytes of blake2b of a tensor_key: the field its verdict is cached under in Redis (keys of
    ~300 bytes would make the cache lookup of a 50,000-vector run send 30 MB)."""
    return hashlib.blake2b(key.encode(), digest_size=DIGEST_SIZE).digest()


class TensorTable:
    """The distinct tensors of an expansion (tensor_key and its digest, by position): vectors name
    their tensors by position here, so each is validated and looked up once, not once per vector.
    Digests are one blob; `keys` may be a loader, called only when a verdict is not cached."""

    def __init__(self, keys: list[str] | Callable[[], list[str]] | None = None, digests: bytes | None = None) -> None:
        self._keys = keys if keys is not None else []
        self._digests = bytearray(digests if digests is not None else b"".join(map(tensor_digest, self.keys)))
        self._at: dict[str, int] | None = None

    @property
    def keys(self) -> list[str]:
        if callable(self._keys):
            self._keys = self._keys()
        return self._keys

    def __len__(self) -> int:
        return len(self._digests) // DIGEST_SIZE

    def digests_of(self, positions: list[int]) -> list[bytes]:
        blob, size = self._digests, DIGEST_SIZE
        return [bytes(blob[i * size : i * size + size]) for i in positions]

    def digests(self) -> bytes:
        return bytes(self._digests)

    def flat(self, pairs: list[tuple[str, str]]) -> tuple[Any, ...]:
        """(slot, tensor_key) pairs (sweeps.vector.tensor_keys) as a vector's flat [slot, position, ...]."""
        return tuple(x for where, key in pairs for x in (where, self.add(key)))

    def add(self, key: str) -> int:
        """The position of a tensor_key, added when new."""
        if self._at is None:
            self._at = {k: i for i, k in enumerate(self.keys)}
        at = self._at.get(key)
        if at is None:
            at = self._at[key] = len(self.keys)
            self.keys.append(key)
            self._digests += tensor_digest(key)
        return at


def shard_bytes_per_core(shape: list[int], dtype: str, layout: str) -> int:
    height, width = shape
    if layout == "TILE":
        return math.ceil(height / 32) * math.ceil(width / 32) * TILE_BYTES[dtype]
    page = width * ELEMENT_BYTES[dtype]
    return height * (-(-page // L1_ALIGNMENT) * L1_ALIGNMENT)


def static_problems(tensor: dict[str, Any], profile: MachineProfile) -> str | None:
    """Checks that need no ttnn: unparsed fields, grid against the machine, L1 capacity."""
    for key in ("shape", "dtype", "layout"):
        if is_unparsed(tensor[key]):
            return f"{key} could not be read from the trace ({tensor[key]['reason']})"
    mc = tensor.get("memory_config")
    if mc is None:
        return None
    if is_unparsed(mc) or any(is_unparsed(mc.get(k)) for k in ("memory_layout", "buffer_type", "shard_spec")):
        return "memory config could not be read from the trace"
    spec = mc.get("shard_spec")
    if mc["memory_layout"] != "INTERLEAVED" and spec is None:
        return f"{mc['memory_layout']} memory config without a shard spec"
    if spec is None:
        return None
    dram = mc["buffer_type"] == "DRAM"  # DRAM shards live on DRAM banks, a (banks, 1) grid
    # a compute grid per dispatch placement the machine opens with (sweeps.meshplan picks the
    # vector's): a tensor is valid when one of them holds its grid
    grids = [(profile.dram_banks, 1)] if dram else [d.grid for d in profile.dispatch]
    x = max(r["end"][0] for r in spec["grid"]) if spec["grid"] else -1
    y = max(r["end"][1] for r in spec["grid"]) if spec["grid"] else -1
    if not any(x < gx and y < gy for gx, gy in grids):
        kind = "DRAM bank grid" if dram else "compute grid"
        names = " or ".join(f"{gx}x{gy}" for gx, gy in grids)
        return f"shard grid core ({x},{y}) is outside the {profile.name} {kind} {names}"
    if mc["buffer_type"] in ("L1", "L1_SMALL"):
        need = shard_bytes_per_core(spec["shape"], tensor["dtype"], tensor["layout"])
        # device hosts open with L1_SMALL_SIZE of L1_SMALL, carved from the top of each core's L1
        have = L1_SMALL_SIZE if mc["buffer_type"] == "L1_SMALL" else profile.l1_bytes_per_core - L1_SMALL_SIZE
        if need > have:
            return f"shard needs {need} B of {mc['buffer_type']} per core, {profile.name} has {have} B"
    return None


def ttnn_reason(exc: BaseException) -> str:
    """The human line of a TT_FATAL: the text after the `TT_FATAL @ file:line: cond` header."""
    lines = [line.strip() for line in str(exc).splitlines()]
    body = []
    for line in lines[1:] if lines and lines[0].startswith("TT_FATAL") else lines:
        if line.startswith("backtrace"):
            break
        if line and line != "info:":
            body.append(line)
    return " ".join(body) or (lines[0] if lines else "")  # a bare `assert` has no text at all


def check_tensor(ttnn: Any, tensor: dict[str, Any], profile: MachineProfile) -> str | None:
    """All checks for one canonical tensor, in a process where ttnn is imported."""
    from sweeps.memconfig import from_ttnn, shard_spec

    problem = static_problems(tensor, profile)
    if problem is not None:
        return problem
    mc = tensor.get("memory_config")
    shape = ttnn.Shape(tensor["shape"])
    dtype = ttnn.DataType[tensor["dtype"]]
    layout = ttnn.Layout[tensor["layout"]]
    try:
        if mc is None or mc["shard_spec"] is None:
            buffer = ttnn.BufferType[mc["buffer_type"]] if mc else ttnn.BufferType.DRAM
            ttnn.TensorSpec(shape, dtype, layout, buffer_type=buffer)
            return None
        spec = ttnn.TensorSpec(
            shape,
            dtype,
            layout,
            ttnn.TensorMemoryLayout[mc["memory_layout"]],
            shard_spec(ttnn, mc["shard_spec"]),
            ttnn.BufferType[mc["buffer_type"]],
        )
    except (RuntimeError, ValueError, TypeError) as exc:
        return ttnn_reason(exc)
    if from_ttnn(spec.memory_config) != mc:
        return "ttnn rebuilt a different memory config than the one traced"
    return None


def _child(machine: str) -> None:
    """Validation child: reads JSON lines of canonical tensors, writes one result line each."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # ttnn prints Config{...} at import
        import ttnn
    profile = get_profile(machine)
    for line in sys.stdin:
        reason = check_tensor(ttnn, json.loads(line), profile)
        sys.stdout.write(json.dumps({"reason": reason}) + "\n")
        sys.stdout.flush()


def validate_tensors(tensors: list[dict[str, Any]], machine: str) -> list[str | None]:
    """Reasons (None = valid) for canonical tensors on one machine type, checked in a child with
    that machine's mock cluster. A child killed by a ttnn call marks that tensor and restarts."""
    profile = get_profile(machine)
    env = {**os.environ, "TT_METAL_MOCK_CLUSTER_DESC_PATH": profile.mock_cluster_path}
    results: list[str | None] = []
    while len(results) < len(tensors):
        todo = tensors[len(results) :]
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from sweeps.validate import _child; _child({machine!r})"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        out, _ = proc.communicate("".join(json.dumps(t) + "\n" for t in todo))
        done = [json.loads(line)["reason"] for line in out.splitlines() if line.startswith("{")]
        results.extend(done)
        if proc.returncode != 0 and len(results) < len(tensors):
            results.append(f"host validation killed the process (exit {proc.returncode})")
    return results


def validate_store_configs(
    configs: list[tuple[str, dict[str, Any], str]],
) -> list[str | None]:
    """Reasons (None = valid) for (op, canonical config, machine) triples: a config is INVALID when
    any of its tensors is. One validation child per machine type."""
    by_machine: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, (_, canonical, machine) in enumerate(configs):
        for value in canonical["args"] + list(canonical["kwargs"].values()):
            if isinstance(value, dict) and "tensor" in value:
                by_machine.setdefault(machine, []).append((index, value["tensor"]))
    reasons: list[str | None] = [None] * len(configs)
    for machine, items in by_machine.items():
        for (index, _), reason in zip(items, validate_tensors([t for _, t in items], machine), strict=True):
            if reason is not None and reasons[index] is None:
                reasons[index] = reason
    return reasons
