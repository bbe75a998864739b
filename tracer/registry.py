"""The model registry (`models.yaml`): which model tests to trace, how, and on which machine types.

tt-metal keeps this as a table in a README that a person reads and runs by hand, one machine at a
time; here it is a file that `sweepctl trace --model/--all` reads to queue trace jobs on the fleet:

    root: $TT_METAL_HOME            # node ids are relative to this, on every host (default: this file's dir)
    models:
      - name: meta-llama/Llama-3.2-1B-Instruct        # unique; an HF id or a model path
        test: models/tt_transformers/demo/simple_text_demo.py::test_demo_text   # node id or script
        env: {HF_MODEL: meta-llama/Llama-3.2-1B-Instruct}
        machines: [n300, t3k]
        timeout: 3600                # s for the whole test under the tracer (default 1800)
        markers: "not slow"          # optional pytest -m expression

Whether a node id can be collected is asked of pytest itself (`--collect-only -q`) in a child
process, with the entry's env and its first machine's mock cluster when there is no tt-smi: model
code is never imported by sweepctl's own process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import yaml

from tracer.capture import is_pytest_target
from tracer.errors import InputError

MODELS_ENV = "SWEEPCTL_MODELS"
MODELS_FILE = "models.yaml"
DEFAULT_TIMEOUT = 1800.0
COLLECT_TIMEOUT = 600.0
_KEYS = ("name", "test", "env", "machines", "timeout", "markers")
_LINE = "__line__"


def default_path(store: str) -> str:
    """--models, else $SWEEPCTL_MODELS, else models.yaml beside the store."""
    return os.environ.get(MODELS_ENV) or os.path.join(os.path.dirname(os.path.abspath(store)), MODELS_FILE)


@dataclass
class ModelEntry:
    name: str
    test: str  # pytest node id or script, relative to the registry's root
    machines: list[str]
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    markers: str | None = None
    line: int = 0  # where the entry starts in its file

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "test": self.test}
        if self.env:
            out["env"] = dict(self.env)
        out["machines"] = list(self.machines)
        out["timeout"] = self.timeout
        if self.markers:
            out["markers"] = self.markers
        return out


@dataclass
class Registry:
    path: str
    root: str  # as written (may hold $VARS, expanded on the host that runs the test)
    entries: list[ModelEntry] = field(default_factory=list)

    @property
    def root_dir(self) -> str:
        """The root on this host: variables expanded, relative to the registry file."""
        expanded = os.path.expanduser(os.path.expandvars(self.root))
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(self.path)), expanded))

    def where(self, entry: ModelEntry) -> str:
        return f"{self.path}:{entry.line}"

    def get(self, name: str) -> ModelEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.entries[:10]) or "none"
        raise InputError(f"--model {name}", f"not in {self.path} (known: {known})")

    def to_yaml(self) -> str:
        return yaml.safe_dump(
            {"root": self.root, "models": [e.as_dict() for e in self.entries]}, sort_keys=False, width=120
        )


class _LineLoader(yaml.SafeLoader):
    """Safe YAML that remembers the line each mapping starts on (for file:line messages)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping[_LINE] = node.start_mark.line + 1
        return mapping


def load(path: str, missing_ok: bool = False) -> Registry:
    """The registry at `path`; a structural problem is one InputError naming file:line."""
    if not os.path.exists(path):
        if missing_ok:
            return Registry(path, ".")
        raise InputError(path, f"no model registry here (pass --models, or set ${MODELS_ENV})")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise InputError(where, f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from None
    if data is None:
        return Registry(path, ".")
    if not isinstance(data, dict):
        raise InputError(f"{path}:1", "expected a mapping with `models:` (and optionally `root:`)")
    unknown = sorted(str(k) for k in data if k not in ("root", "models", _LINE))
    if unknown:
        raise InputError(f"{path}:1", f"unknown key {unknown[0]!r} (expected root, models)")
    root = data.get("root", ".")
    if not isinstance(root, str) or not root:
        raise InputError(f"{path}:1", "root: expected a directory path")
    models = data.get("models") or []
    if not isinstance(models, list):
        raise InputError(f"{path}:1", "models: expected a list of entries")
    line = data.get(_LINE, 1)
    return Registry(path, root, [_entry(path, raw, line) for raw in models])


def _entry(path: str, raw: Any, parent_line: int) -> ModelEntry:
    if not isinstance(raw, dict):
        raise InputError(f"{path}:{parent_line}", f"a models entry must be a mapping, not {raw!r}")
    line = raw.pop(_LINE, parent_line)
    where = f"{path}:{line}"
    for key in raw:
        if key not in _KEYS:
            raise InputError(where, f"unknown key {key!r} (expected {', '.join(_KEYS)})")
    name, test, machines = raw.get("name"), raw.get("test"), raw.get("machines")
    if not isinstance(name, str) or not name.strip():
        raise InputError(where, "name: expected the model's name (an HF id or a model path)")
    if not isinstance(test, str) or not test.strip():
        raise InputError(where, f"model {name!r}: test: expected a pytest node id or a script")
    if isinstance(machines, str):
        machines = [machines]
    if not isinstance(machines, list) or not machines or not all(isinstance(m, str) for m in machines):
        raise InputError(where, f"model {name!r}: machines: expected a list of machine types")
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        raise InputError(where, f"model {name!r}: env: expected a mapping of variable: value")
    env.pop(_LINE, None)
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InputError(where, f"model {name!r}: timeout: expected seconds > 0, not {timeout!r}")
    markers = raw.get("markers")
    if markers is not None and not isinstance(markers, str):
        raise InputError(where, f"model {name!r}: markers: expected a pytest -m expression")
    return ModelEntry(
        name.strip(),
        _normalized_test(test.strip()),
        [m.strip().lower() for m in machines],
        {str(k): str(v) for k, v in env.items()},
        float(timeout),
        markers,
        line,
    )


def _normalized_test(test: str) -> str:
    path, sep, rest = test.partition("::")
    return os.path.normpath(path) + sep + rest


def problems(registry: Registry) -> list[str]:
    """Unknown machine types and duplicate names, one line each (file:line: what)."""
    from sweeps.profiles import PROFILES

    out, seen = [], {}
    for entry in registry.entries:
        where = registry.where(entry)
        for machine in entry.machines:
            if machine not in PROFILES:
                out.append(f"{where}: model {entry.name!r}: unknown machine {machine!r} (known: {', '.join(PROFILES)})")
        if entry.name in seen:
            out.append(f"{where}: model {entry.name!r}: duplicate name (first at line {seen[entry.name]})")
        else:
            seen[entry.name] = entry.line
    return out


# --- pytest's own collection, in a child process -------------------------------------------------


@dataclass
class Collected:
    node_ids: list[str]
    errors: dict[str, str]  # file -> collection error line
    output: str


def _collect_env(env: dict[str, str], machines: list[str]) -> dict[str, str]:
    """The entry's env, plus the mock cluster of its first known machine when this host has no
    tt-smi (ttnn's import needs a cluster descriptor)."""
    from sweeps.profiles import PROFILES

    out = {**os.environ, **env}
    known = [m for m in machines if m in PROFILES] or list(PROFILES)  # an unknown one is reported apart
    if "TT_METAL_MOCK_CLUSTER_DESC_PATH" not in out and shutil.which("tt-smi") is None and known:
        out["TT_METAL_MOCK_CLUSTER_DESC_PATH"] = PROFILES[known[0]].mock_cluster_path
    return out


_ERROR = re.compile(r"^ERROR (\S+)(?: - (.*))?$")
_SECTION = re.compile(r"^_+ ERROR collecting (\S+) _+$")


def run_collection(root: str, targets: list[str], env: dict[str, str], extra: list[str] = ()) -> Collected:
    """`pytest --collect-only -q` of `targets` (relative to root) with cwd and rootdir = root."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--rootdir={root}", *extra, *targets]  # fmt: skip
    try:
        proc = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=COLLECT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise InputError(f"pytest --collect-only in {root}", f"did not finish in {COLLECT_TIMEOUT:g} s") from None
    nodes, errors = [], {}
    section = None  # the file whose collection error is being printed
    for line in proc.stdout.splitlines():
        text = line.strip()
        found, header = _ERROR.match(text), _SECTION.match(text)
        if header:
            section = header.group(1)
        elif section and text.startswith("E ") and section not in errors:
            errors[section] = text[1:].strip()  # the exception line of pytest's report
        elif found:
            errors.setdefault(found.group(1), found.group(2) or "collection error")
        elif "::" in text and " " not in text.split("::")[0] and not text.startswith(("=", "_")):
            nodes.append(text)
    return Collected(nodes, errors, proc.stdout + proc.stderr)


def _matches(test: str, node: str) -> bool:
    return node == test or node.startswith((test + "[", test + "::"))


def collection_problems(registry: Registry, entries: list[ModelEntry] | None = None) -> list[str]:
    """The entries whose test pytest cannot collect (scripts: the file must exist), one line each.
    One pytest run per distinct entry env: an env (HF_MODEL) can change what a test parametrizes."""
    root = registry.root_dir
    entries = registry.entries if entries is None else entries
    if not os.path.isdir(root):
        return [f"{registry.path}:1: root {registry.root!r} is not a directory here ({root})"]
    out: list[str] = []
    groups: dict[tuple[tuple[str, str], ...], list[ModelEntry]] = defaultdict(list)  # by entry env
    for entry in entries:
        path = entry.test.split("::")[0]
        if not os.path.exists(os.path.join(root, path)):
            out.append(f"{registry.where(entry)}: model {entry.name!r}: {path}: no such file under {root}")
        elif is_pytest_target(entry.test):
            groups[tuple(sorted(entry.env.items()))].append(entry)
    for env, group in groups.items():  # any one mock cluster lets ttnn import: the group's first machine's
        files = sorted({e.test.split("::")[0] for e in group})
        collected = run_collection(root, files, _collect_env(dict(env), [m for e in group for m in e.machines]))
        for entry in group:
            path = entry.test.split("::")[0]
            if path in collected.errors:
                out.append(f"{registry.where(entry)}: model {entry.name!r}: {path}: {collected.errors[path]}")
            elif not any(_matches(entry.test, node) for node in collected.node_ids):
                out.append(f"{registry.where(entry)}: model {entry.name!r}: pytest collects no test {entry.test!r}")
    return sorted(out, key=_line_order)


def _line_order(text: str) -> tuple[str, int]:
    found = re.match(r"^(.*?):(\d+):", text)
    return (found.group(1), int(found.group(2))) if found else (text, 0)


def check(registry: Registry, collect: bool = True) -> list[str]:
    """Every problem of the registry, one line each: unknown machines, duplicates, uncollectable tests."""
    found = problems(registry)
    if collect:
        found += collection_problems(registry)
    return sorted(found, key=_line_order)


def discover(
    registry: Registry, path: str, machines: list[str], k: str | None = None, m: str | None = None,
    env: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT,
) -> tuple[list[ModelEntry], list[str]]:  # fmt: skip
    """Registry entries for the node ids pytest collects under `path` (with -k / -m as given), and
    the node ids already registered (by test). A name is its node id."""
    root = registry.root_dir
    target = os.path.relpath(os.path.abspath(path), root)
    if target.startswith(".."):
        raise InputError(path, f"outside the registry's root {root}: node ids would not resolve on the workers")
    if not os.path.exists(os.path.join(root, target)):
        raise InputError(path, "no such file or directory")
    extra = [*(["-k", k] if k else []), *(["-m", m] if m else [])]
    collected = run_collection(root, [target], _collect_env(env or {}, machines), extra)
    if collected.errors:
        file, why = next(iter(collected.errors.items()))
        raise InputError(file, f"pytest could not collect it: {why}")
    registered = {e.test for e in registry.entries}
    names = {e.name for e in registry.entries}
    new, known = [], []
    for node in collected.node_ids:
        if node in registered or node in names:
            known.append(node)
        else:
            new.append(ModelEntry(node, node, list(machines), dict(env or {}), timeout, m))
    return new, known
