"""The model registry: its file read with file:line for every problem, `models check` asking pytest's
own collection in a child process, `models discover` proposing (and --write adding) entries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tracer import registry as reg
from tracer.errors import InputError


def sweepctl(*args: str, cwd) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (the pytest it starts loads no plugin: conftest)."""
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)  # fmt: skip


@pytest.fixture
def model_repo(tmp_path):
    """A tiny model repo: one parametrized test, one plain, one file that cannot be imported."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "test_llm.py").write_text(
        "import pytest\n\n@pytest.mark.parametrize('batch', [1, 32])\ndef test_decode(batch):\n    pass\n\n"
        "@pytest.mark.slow\ndef test_prefill():\n    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "models" / "test_broken.py").write_text("import no_such_module\n\ndef test_x():\n    pass\n")
    return tmp_path


def test_structural_problems_name_the_file_and_line(tmp_path):
    path = tmp_path / "models.yaml"
    cases = {
        "models:\n  - name: a\n    test: t.py\n    machines: [n300]\n    timeot: 3\n": (2, "unknown key 'timeot'"),
        "models:\n  - name: a\n    test: t.py\n    machines: []\n": (2, "machines"),
        "models:\n  - name: a\n    test: t.py\n    machines: [n300]\n  - name: b\n    machines: [n300]\n": (5, "test"),
        "models:\n  - name: a\n    test: t.py\n    machines: [n300]\n    timeout: -1\n": (2, "timeout"),
        "models: [\n": (2, "not valid YAML"),
    }
    for text, (line, what) in cases.items():
        path.write_text(text, encoding="utf-8")
        with pytest.raises(InputError) as err:
            reg.load(str(path))
        assert err.value.where == f"{path}:{line}" and what in err.value.message, (text, str(err.value))


def test_check_reports_machines_duplicates_and_uncollectable_tests(model_repo):
    models = model_repo / "models.yaml"
    models.write_text(
        "models:\n"
        "  - name: llm\n    test: models/test_llm.py::test_decode\n    machines: [n300, t3k]\n"
        "  - name: llm-prefill\n    test: models/test_llm.py::test_prefill\n    machines: [n301]\n"
        "  - name: llm\n    test: models/test_llm.py::test_nothing\n    machines: [n300]\n"
        "  - name: broken\n    test: models/test_broken.py::test_x\n    machines: [n300]\n"
        "  - name: gone\n    test: models/test_gone.py\n    machines: [n300]\n",
        encoding="utf-8",
    )
    proc = sweepctl("models", "check", "--models", str(models), cwd=model_repo)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"{models}:5: model 'llm-prefill': unknown machine 'n301' (known: n150, n300, t3k, galaxy, p150, p300)",
        f"{models}:8: model 'llm': duplicate name (first at line 2)",
        f"{models}:8: model 'llm': pytest collects no test 'models/test_llm.py::test_nothing'",
        f"{models}:11: model 'broken': models/test_broken.py: ModuleNotFoundError: No module named 'no_such_module'",
        f"{models}:14: model 'gone': models/test_gone.py: no such file under {model_repo}",
    ]
    good = model_repo / "good.yaml"
    good.write_text("models:\n  - name: llm\n    test: models/test_llm.py::test_decode\n    machines: [n300]\n")
    ok = sweepctl("models", "check", "--models", str(good), cwd=model_repo)
    assert ok.returncode == 0 and "no problems" in ok.stdout


def test_discover_proposes_collected_node_ids_and_writes_them(model_repo):
    models = model_repo / "models.yaml"
    models.write_text("models:\n  - name: llm\n    test: models/test_llm.py::test_decode[1]\n    machines: [n300]\n")
    dry = sweepctl("models", "discover", "models/test_llm.py", "--machine", "t3k", "-m", "not slow",
                   "--models", str(models), "--json", cwd=model_repo)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    proposal = json.loads(dry.stdout)
    assert [e["name"] for e in proposal["new"]] == ["models/test_llm.py::test_decode[32]"]
    assert proposal["already_registered"] == ["models/test_llm.py::test_decode[1]"] and not proposal["written"]
    assert "test_decode[32]" not in models.read_text()

    wrote = sweepctl("models", "discover", "models", "--machine", "t3k", "-k", "prefill", "--env", "HF_MODEL=x/y",
                     "--models", str(models), "--write", cwd=model_repo)  # fmt: skip
    assert wrote.returncode == 2 and "test_broken.py" in wrote.stderr  # a file pytest cannot collect is said
    wrote = sweepctl("models", "discover", "models/test_llm.py", "--machine", "t3k", "-k", "prefill",
                     "--env", "HF_MODEL=x/y", "--models", str(models), "--write", cwd=model_repo)  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    entries = reg.load(str(models)).entries
    assert [(e.name, e.machines, e.env) for e in entries] == [
        ("llm", ["n300"], {}),
        ("models/test_llm.py::test_prefill", ["t3k"], {"HF_MODEL": "x/y"}),
    ]
    listed = sweepctl("models", "list", "--models", str(models), "--json", cwd=model_repo)
    assert [e["name"] for e in json.loads(listed.stdout)] == ["llm", "models/test_llm.py::test_prefill"]


def test_the_default_registry_sits_beside_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv(reg.MODELS_ENV, raising=False)
    assert reg.default_path(str(tmp_path / "stores" / "master.json")) == str(tmp_path / "stores" / "models.yaml")
    monkeypatch.setenv(reg.MODELS_ENV, "/etc/sweepctl/models.yaml")
    assert reg.default_path("master.json") == "/etc/sweepctl/models.yaml"
    missing = sweepctl("models", "list", "--models", str(tmp_path / "none.yaml"), cwd=ROOT)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "none.yaml" in missing.stderr
