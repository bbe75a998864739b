"""Shared fixtures: the real traced data in ../shared/data and small helpers."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ADD_SWEEP = SHARED_DATA / "ttnn_master_add_sweep_head.json"
MINI = SHARED_DATA / "ttnn_operations_master_mini.json"
TRACER_EXAMPLES = SHARED_DATA / "operation_tracer_examples"


@pytest.fixture
def add_sweep() -> dict:
    with open(ADD_SWEEP, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def deepcopy(data):
    return copy.deepcopy(data)


@pytest.fixture(autouse=True)
def _no_user_store(monkeypatch, tmp_path):
    """Commands under test never touch a store in the developer's working directory."""
    monkeypatch.delenv("SWEEPCTL_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("PYTHONHASHSEED", "0")
