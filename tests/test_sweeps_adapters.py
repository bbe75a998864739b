"""Per-op adapters on real traced configs: each computes what the op does with the call as traced.

The calls are the stores' own (DeepSeek-V3 on a Galaxy, the shipped sample), with input data made
the way the executor makes it (sweeps.materialize.generate with the catalogue's data kinds); each
adapter's result is checked against the op's meaning written out independently here.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sweeps import adapters
from sweeps.catalogue import lookup
from sweeps.materialize import generate, referred_shapes
from sweeps.vector import tensor_slots
from tests.conftest import DEEPSEEK, ROOT
from tracer.args import canonical_arguments
from tracer.master import read_master

SAMPLE = ROOT / "sweeps" / "data" / "sample_master.json"


def _configs(path, op: str) -> list[dict]:
    doc = json.loads(path.read_text())
    return [canonical_arguments(e.arguments) for e in read_master(doc, str(path)) if e.op == op]


def _call(op: str, config: dict, seed: int = 0) -> tuple[list, dict]:
    """The traced call with data in its tensor slots (other values as traced)."""
    opdef = lookup(op)
    vector = {"inputs": config["args"], "kwargs": config["kwargs"]}
    tensors = dict(tensor_slots(vector))
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for slot, tensor in tensors.items():
        kind = opdef.data_kind(slot)
        data[slot] = generate(tensor, kind, gen, referred_shapes(kind, tensors))

    def fill(slot, value):
        if isinstance(value, dict) and "tensor" in value:
            return data[slot]
        if isinstance(value, list) and any(isinstance(v, dict) and "tensor" in v for v in value):
            return [fill(f"{slot}.{i}", v) for i, v in enumerate(value)]
        return value

    return [fill(str(i), v) for i, v in enumerate(config["args"])], {k: fill(k, v) for k, v in config["kwargs"].items()}


def _golden(op: str, args: list, kwargs: dict, ctx: dict | None = None):
    return lookup(op).golden(None, args, kwargs, ctx or {})


def test_reshape_takes_the_shape_where_the_trace_put_it():
    configs = _configs(DEEPSEEK, "ttnn.reshape")
    assert {("shape" in c["kwargs"], len(c["args"])) for c in configs} == {(True, 1), (False, 2)}  # both forms
    for config in configs:
        args, kwargs = _call("ttnn.reshape", config)
        shape = kwargs.get("shape", args[1] if len(args) > 1 else None)
        assert torch.equal(_golden("ttnn.reshape", args, kwargs), args[0].reshape(shape))
        padded = [*args[:2], list(args[0].shape)] if len(args) > 1 else args  # (input, shape, padded_shape)
        assert torch.equal(_golden("ttnn.reshape", padded, kwargs), args[0].reshape(shape))


def test_repeat_reads_its_dims_positionally_and_as_repeat_dims():
    configs = _configs(DEEPSEEK, "ttnn.repeat")
    assert any("repeat_dims" in c["kwargs"] for c in configs) and any(len(c["args"]) > 1 for c in configs)
    for config in configs:
        args, kwargs = _call("ttnn.repeat", config)
        times = kwargs.get("repeat_dims", args[-1])
        out = _golden("ttnn.repeat", args, kwargs)
        assert list(out.shape) == [n * t for n, t in zip(args[0].shape, times, strict=True)]
        assert torch.equal(out, args[0].repeat(*times))


def test_embedding_takes_the_weight_positionally_or_by_name_and_indexes_real_rows():
    configs = _configs(DEEPSEEK, "ttnn.embedding")
    assert any("weight" in c["kwargs"] for c in configs) and any(len(c["args"]) == 2 for c in configs)
    for config in configs:
        args, kwargs = _call("ttnn.embedding", config)
        indices, weight = args[0], kwargs.get("weight", args[-1])
        rows = weight.reshape(-1, weight.shape[-1])
        assert 0 <= int(indices.min()) and int(indices.max()) < rows.shape[0]  # data kind index:1|weight
        out = _golden("ttnn.embedding", args, kwargs)
        assert torch.equal(out, rows[indices.long()])


def test_scatter_writes_src_at_distinct_valid_positions():
    for config in _configs(DEEPSEEK, "ttnn.scatter"):
        args, kwargs = _call("ttnn.scatter", config)
        source, index, src, dim = kwargs["input"], kwargs["index"], kwargs["src"], kwargs["dim"]
        assert index.dtype == torch.int32  # traced UINT16
        rows = index.reshape(-1, index.shape[-1])
        assert all(len(set(row.tolist())) == len(row) for row in rows)  # distinct per row: no write races
        assert int(rows.max()) < source.shape[-1]
        out = _golden("ttnn.scatter", args, kwargs)
        expected = source.clone()
        for position in torch.cartesian_prod(*[torch.arange(n) for n in index.shape]).tolist():
            target = list(position)
            target[dim] = int(index[tuple(position)])
            expected[tuple(target)] = src[tuple(position)]
        assert torch.equal(out, expected)


def test_fast_reduce_nc_sums_the_outer_dims_it_names():
    for config in _configs(DEEPSEEK, "ttnn.experimental.fast_reduce_nc"):
        args, kwargs = _call("ttnn.experimental.fast_reduce_nc", config)
        assert kwargs["dims"] == [1]
        out = _golden("ttnn.experimental.fast_reduce_nc", args, kwargs)
        assert list(out.shape) == [args[0].shape[0], 1, *args[0].shape[2:]]
        assert torch.allclose(out[:, 0], sum(args[0][:, i] for i in range(args[0].shape[1])), atol=1e-5)


def test_paged_fill_cache_writes_the_users_pages_and_nothing_else():
    configs = _configs(DEEPSEEK, "ttnn.experimental.paged_fill_cache")
    assert len(configs) == 128 and {c["kwargs"]["batch_idx"] for c in configs} == {0, 1, 2, 3}
    config = next(c for c in configs if c["kwargs"]["batch_idx"] == 3)
    args, kwargs = _call("ttnn.experimental.paged_fill_cache", config)
    (cache, source), table = args, kwargs["page_table"]
    assert sorted(table.reshape(-1).tolist()) == list(range(cache.shape[0]))  # page_table: distinct pages
    before = cache.clone()
    out = _golden("ttnn.experimental.paged_fill_cache", args, kwargs)
    assert torch.equal(cache, before)  # the input is shared data (an executor keeps large inputs): never modified
    block, seq = cache.shape[2], source.shape[2]
    written = [int(table[3, i]) for i in range(math.ceil(seq / block))]
    for page, chunk in zip(written, source[0].split(block, dim=1), strict=True):
        assert torch.equal(out[page], chunk)
    untouched = [p for p in range(cache.shape[0]) if p not in written]
    assert torch.equal(out[untouched], cache[untouched])


def test_paged_update_cache_writes_each_users_token_at_its_position():
    (config,) = _configs(DEEPSEEK, "ttnn.experimental.paged_update_cache")
    args, kwargs = _call("ttnn.experimental.paged_update_cache", config)
    cache, source = args
    positions, table = kwargs["update_idxs_tensor"], kwargs["page_table"]
    block = cache.shape[2]
    assert int(positions.max()) < table.shape[1] * block  # data kind position:page_table:0|cache_tensor
    out = _golden("ttnn.experimental.paged_update_cache", args, kwargs)
    expected = cache.clone()
    for user, position in enumerate(positions.tolist()):
        expected[int(table[user, position // block]), 0, position % block] = source[0, user, 0]
    assert torch.equal(out, expected) and not torch.equal(out, cache)


def _rotate_pairs(x, cos, sin):
    """Llama rotary embedding as complex rotation of (even, odd) pairs, cos/sin in ttnn's doubled
    format ([c0, c0, c1, c1, ...]), as tt-metal's rotary sweep writes its golden."""
    c, s = cos[..., 0::2], sin[..., 0::2]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2)


@pytest.mark.parametrize("decode", [False, True])
def test_rotary_embedding_llama_rotates_pairs_with_the_real_transformation_matrix(decode):
    config = next(
        c
        for c in _configs(DEEPSEEK, "ttnn.experimental.rotary_embedding_llama")
        if c["kwargs"]["is_decode_mode"] is decode
    )
    args, kwargs = _call("ttnn.experimental.rotary_embedding_llama", config)
    x, cos, sin, trans = args
    assert list(trans.shape)[-2] == (32 * x.shape[1] if decode else 32)  # decode: one matrix per user
    angles = torch.rand(*cos.shape[:-1], cos.shape[-1] // 2, generator=torch.Generator().manual_seed(1)) * 6.28
    cos = torch.cos(angles).repeat_interleave(2, dim=-1)
    sin = torch.sin(angles).repeat_interleave(2, dim=-1)
    out = _golden("ttnn.experimental.rotary_embedding_llama", [x, cos, sin, trans], kwargs)
    assert torch.allclose(out, _rotate_pairs(x, cos, sin), atol=1e-5)
    if decode:  # each user's rows go through that user's own matrix
        scaled = trans.reshape(-1, 32, 32) * torch.arange(1.0, x.shape[1] + 1).reshape(-1, 1, 1)
        out = _golden("ttnn.experimental.rotary_embedding_llama", [x, cos, sin, scaled.reshape(trans.shape)], kwargs)
        for user in range(x.shape[1]):
            rows = x[0, user]  # [heads, dim]
            turned = (rows.reshape(rows.shape[0], -1, 32) @ scaled[user]).reshape(rows.shape)
            assert torch.allclose(out[0, user], rows * cos[0, user] + turned * sin[0, user], atol=1e-4)


def test_nlp_create_qkv_heads_decode_splits_the_query_heads():
    (config,) = _configs(SAMPLE, "ttnn.experimental.nlp_create_qkv_heads_decode")
    args, kwargs = _call("ttnn.experimental.nlp_create_qkv_heads_decode", config)
    fused, heads, kv_heads = args[0], kwargs["num_heads"], kwargs["num_kv_heads"]
    head_dim = fused.shape[-1] // (heads + 2 * kv_heads)
    out = _golden("ttnn.experimental.nlp_create_qkv_heads_decode", args, kwargs)
    assert list(out.shape) == [1, fused.shape[2], heads, head_dim]
    for user in range(fused.shape[2]):
        for head in range(heads):
            assert torch.equal(out[0, user, head], fused[0, 0, user, head * head_dim : (head + 1) * head_dim])


def test_linear_broadcasts_batched_and_3d_weights_and_applies_bias_and_activation():
    configs = _configs(DEEPSEEK, "ttnn.linear")
    small = [c for c in configs if math.prod(c["kwargs"]["input_tensor_b"]["tensor"]["shape"]) <= 1 << 22]
    shapes = {len(c["kwargs"]["input_tensor_b"]["tensor"]["shape"]) for c in small}
    assert shapes == {3, 4}  # 3-D and 4-D weights as traced
    for config in small:
        args, kwargs = _call("ttnn.linear", config)
        a, b = args[0], kwargs["input_tensor_b"]
        out = _golden("ttnn.linear", args, kwargs)
        expected = torch.matmul(a, b)
        assert list(out.shape) == list(expected.shape[-a.dim() :]) and torch.allclose(out, expected.reshape(out.shape))
    a, b = torch.randn(1, 1, 32, 64), torch.randn(1, 1, 64, 96)
    bias = torch.randn(1, 1, 32, 96)  # traced biases are tile-padded rows; the first is the bias
    out = adapters.linear(None, [a, b], {"bias": bias, "activation": "silu"}, {})
    assert torch.allclose(out, torch.nn.functional.silu(a @ b + bias[0, 0, 0]))
    # a program config's fused activation: tests/test_sweeps_configobjects.py (the built ttnn object)
    for unknown in ("UnaryOpType.HARDSWISH", "UnaryOpType.GELU_TANH"):  # never guessed
        with pytest.raises(ValueError, match="has no golden"):
            adapters.linear(None, [a, b], {"activation": unknown}, {})


def test_sigmoid_accurate_takes_the_traced_extra_arguments():
    x = torch.randn(1, 1, 32, 64)
    assert torch.equal(adapters.sigmoid_accurate(None, [x, False, None], {}, {}), torch.sigmoid(x))


def test_views_judge_only_what_is_defined():
    stats = torch.zeros(1, 1, 8, 64)
    stats[..., 0], stats[..., 32], stats[..., 5] = 1.0, 2.0, 9.0  # column 5 is unspecified
    assert torch.equal(adapters.stat_columns(stats, [], {}), stats[..., [0, 32]])
    values = adapters.rand(None, [], {"shape": [4, 5], "low": -1.0, "high": 3.0}, {})
    assert list(values.shape) == [4, 5] and bool(((values >= -1) & (values < 3)).all())
    judged = adapters.in_range(torch.tensor([-1.0, 0.0, 3.0, 3.5]), [], {"low": -1.0, "high": 3.0})
    assert judged.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_rope_transformation_matrix_turns_pairs_into_their_rotation():
    mats = generate({"shape": [1, 1, 64, 32], "dtype": "BFLOAT16"}, "rope_trans_mat", torch.Generator())
    x = torch.arange(32.0)
    for block in mats.reshape(2, 32, 32):
        rotated = x @ block
        assert torch.equal(rotated[0::2], -x[1::2]) and torch.equal(rotated[1::2], x[0::2])
