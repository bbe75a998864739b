"""tt-metal's OpRun/OpTest data models (infra/data_collection/pydantic_models.py), rewritten from
their field list for contract tests: what their Superset import validates each oprun_*.json with.
Required-but-nullable fields are declared without a default, as tt-metal declares them, so a
missing key fails just as it fails there."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict


class TestStatus(Enum):
    __test__ = False  # not a pytest class

    compile_failed = "compile_failed"
    run_failed = "run_failed"
    golden_failed = "golden_failed"
    success = "success"
    passed = "pass"
    fail_assert_exception = "fail_assert_exception"
    fail_l1_out_of_mem = "fail_l1_out_of_mem"
    fail_watcher = "fail_watcher"
    fail_crash_hang = "fail_crash_hang"
    fail_unsupported_device_perf = "fail_unsupported_device_perf"
    skipped = "skipped"
    error = "error"


class RunStatus(Enum):
    passed = "passed"
    fail = "fail"
    did_not_finish = "did_not_finish"
    exception = "exception"


class PerfMetric(BaseModel):
    model_config = ConfigDict(frozen=True)

    metric_name: str
    metric_value: float


class OpParam(BaseModel):
    model_config = ConfigDict(frozen=True)

    param_name: str
    param_value_numeric: float | None = None
    param_value_text: str | None = None
    param_value_json: dict | list | None = None


class TensorDesc(BaseModel):
    shape: list[int]
    data_type: str
    buffer_type: str
    layout: str
    grid_shape: list[int]


class OpTest(BaseModel):
    github_job_id: int | None
    full_test_name: str
    test_start_ts: datetime
    test_end_ts: datetime
    test_case_name: str | None
    filepath: str
    success: bool
    skipped: bool
    error_message: str | None = None
    error_hash: str | None = None
    config: dict | None = None
    frontend: str
    model_name: str
    op_kind: str
    op_name: str
    framework_op_name: str
    inputs: list[TensorDesc] | None
    outputs: list[TensorDesc] | None
    op_params: dict | None = None
    git_sha: str | None
    status: TestStatus | None
    card_type: str | None
    backend: str | None
    data_source: str | None = None
    input_hash: str | None = None
    message: str | None = None
    exception: str | None = None
    metrics: set[PerfMetric] | None = None
    op_params_set: list[OpParam] | None


class OpRun(BaseModel):
    initiated_by: str
    host: str
    card_type: str
    run_type: str
    run_contents: str
    git_author: str
    git_branch_name: str
    git_sha: str
    github_pipeline_id: int | None = None
    run_start_ts: datetime
    run_end_ts: datetime
    status: RunStatus
    tests: list[OpTest]
