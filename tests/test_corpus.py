"""Every traced config of every real store in the repository gets a true verdict on the emulated
path: PASS, FAIL_ACCURACY from block-float rounding, INVALID, or NOT_RUN naming the argument the
trace lacks; never an error of ours, never "no sweep definition" (tests/corpus.py runs them)."""

from __future__ import annotations

from tests.corpus import STORES, judge, problems, store_path, table
from tracer.store import MasterStore


def test_every_config_of_every_store_in_the_repo_gets_a_true_verdict(tmp_path):
    verdicts = judge()
    found = problems(verdicts)
    assert not found, f"{table(verdicts)}\n\n{len(found)} problems:\n" + "\n".join(found)
    for name in STORES:  # nothing dropped: every op of every store was judged
        ops = set(MasterStore.load(str(store_path(name, tmp_path)), missing_ok=False).ops)
        assert {v.op for v in verdicts if v.store == name} == ops, name
    deepseek = [v for v in verdicts if v.store == "deepseek"]
    assert len(deepseek) == 323 and sum(v.status == "PASS" for v in deepseek) == 323  # 338 configs, 15 twins
