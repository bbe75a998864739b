"""The op catalogue: for each covered op, its family, how its inputs are filled, its golden, its
PCC thresholds and its timeout. The one place that says which ops sweepctl can run.

Families make a new op one line: the family knows how a traced config of that shape becomes
inputs and a golden. Goldens are ttnn's own (`ttnn.get_golden_function`) unless the family names a
torch function (CCL ops, ops without one). This module imports neither ttnn nor torch, so the
coordinator and the CLI can read it; goldens run in the executor.

Data kinds per input slot (position "0", "1"… or a kwarg name): "normal" (randn, the default),
"positive" (uniform 0.5..2, for rsqrt/log), "index:<slot>" (integer rows of the tensor in <slot>,
for embedding), "bool" (0/1 predicate, for where), "page_table:<slot>" (distinct pages of the paged
cache in <slot>), "position:<table slot>:<cache slot>" (token positions the page table covers, the
cache's own rows without one), "rope_trans_mat" (the rotary transformation matrix), "integral" and
"integral_positive" (small integers, exact in every float dtype: comparisons, argmax, remainder).
A slot written "3|page_table_tensor" is the position or the name the call uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sweeps import adapters

# Least precise dtype of a vector's tensors -> the PCC it must reach. Integer and float32
# outputs are near exact; block-float formats share an exponent per 16 values and lose more.
THRESHOLDS = {
    "FLOAT32": 0.9999,
    "BFLOAT16": 0.999,
    "BFLOAT8_B": 0.99,
    "BFLOAT4_B": 0.96,
    "FP8_E4M3": 0.98,
}
_PRECISION_ORDER = ("BFLOAT4_B", "FP8_E4M3", "BFLOAT8_B", "BFLOAT16", "FLOAT32")
DEFAULT_TIMEOUT = 30.0
TEST_OPS_ENV = "SWEEPCTL_ENABLE_TEST_OPS"

Golden = Callable[..., Any]  # (ttnn, args, kwargs, ctx) -> torch tensor


@dataclass(frozen=True)
class OpDef:
    name: str
    family: str
    golden: Golden | None = None  # None: ttnn.get_golden_function(name)
    data: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # per-dtype overrides of THRESHOLDS
    timeout: float = DEFAULT_TIMEOUT
    collective: bool = False  # CCL: one input per device along the cluster axis
    test_only: bool = False

    def threshold(self, dtypes: list[str]) -> float:
        """PCC required: that of the least precise dtype among the vector's tensors."""
        floats = [d for d in dtypes if d in THRESHOLDS]
        if not floats:
            return 0.9999  # integer results: exact up to the comparison's float64 rounding
        worst = min(floats, key=_PRECISION_ORDER.index)
        return self.thresholds.get(worst, THRESHOLDS[worst])

    def data_kind(self, slot: str) -> str:
        """The data kind of a slot; a key "3|page_table_tensor" names the slot by position or name."""
        for slots, kind in self.data.items():
            if slot in slots.split("|"):
                return kind
        return "normal"


# --- torch goldens for ops ttnn has none for, or whose ttnn golden needs a mesh ----------------


def _gather(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    import torch

    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    return torch.cat(ctx["device_inputs"], dim=dim)


def _reduce_scatter(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    import torch

    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    total = torch.stack(ctx["device_inputs"]).sum(0)
    return torch.chunk(total, len(ctx["device_inputs"]), dim=dim)[0]  # what device 0 keeps


def _embedding(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """ttnn's golden wants a 2-D weight; models trace it as [1, 1, vocab, dim]."""
    import torch

    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
    return torch.nn.functional.embedding(args[0].long(), weight.reshape(-1, weight.shape[-1]))


def _noop(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    return args[0]


# --- families ------------------------------------------------------------------------------------


def _family(family: str, **defaults: Any) -> Callable[..., OpDef]:
    def make(name: str, **overrides: Any) -> OpDef:
        return OpDef(f"ttnn.{name}", family, **{**defaults, **overrides})

    make.__doc__ = f"An op of the {family} family."
    return make


unary = _family("unary")
binary = _family("binary")
ternary = _family("ternary")
reduction = _family("reduction")
data_movement = _family("data_movement")
matmul = _family("matmul", timeout=60.0)
normalization = _family("normalization")
conv_pool = _family("conv_pool", timeout=120.0)
embedding = _family("embedding", golden=_embedding, data={"0": "index:weight", "1": "normal"})
typecast = _family("typecast")
creation = _family("creation")
transformer = _family("transformer", timeout=60.0)
ccl = _family("ccl", collective=True, timeout=60.0)

_OPS: tuple[OpDef, ...] = (
    *(unary(n) for n in ("relu", "silu", "gelu", "sigmoid", "exp", "neg", "tanh", "abs")),
    unary("rsqrt", data={"0": "positive"}),
    *(binary(n) for n in ("add", "multiply", "subtract", "div", "maximum", "minimum")),
    ternary("clamp"),
    ternary("where", data={"0": "bool"}),
    *(reduction(n) for n in ("sum", "mean", "max", "min", "topk")),
    *(
        data_movement(n)
        for n in (
            "pad",
            "permute",
            "reshape",
            "transpose",
            "concat",
            "slice",
            "repeat",
            "squeeze",
            "unsqueeze",
            "to_layout",
            "to_memory_config",
            "tilize_with_zero_padding",
            "tilize",
            "untilize",
            "interleaved_to_sharded",
            "sharded_to_interleaved",
            "clone",
        )
    ),
    matmul("matmul"),
    matmul("linear"),
    *(normalization(n) for n in ("softmax", "rms_norm")),
    conv_pool("conv2d"),
    conv_pool("upsample"),
    embedding("embedding"),
    typecast("typecast"),
    *(creation(n) for n in ("zeros", "ones", "full")),
    transformer("transformer.scaled_dot_product_attention"),
    ccl("all_gather", golden=_gather),
    ccl("experimental.all_gather_async", golden=_gather),
    ccl("reduce_scatter", golden=_reduce_scatter),
    ccl("experimental.reduce_scatter_minimal_async", golden=_reduce_scatter),
    # --- tt-metal model_traced modules beyond the repo's stores
    # (tests/data/tt_metal_model_traced_modules.txt names each module's op; adapters in sweeps/adapters.py)
    *(unary(n, golden=adapters.input_only(n)) for n in ("cos", "sin", "erf", "floor", "swish", "sigmoid_accurate")),
    *(unary(n, golden=adapters.input_only(n), data={"0": "positive"}) for n in ("sqrt", "log", "reciprocal")),
    unary("pow", data={"0": "positive"}),
    unary("plus_one"),
    *(binary(n) for n in ("add_", "multiply_", "subtract_")),
    *(binary(n, data={"0": "integral", "1": "integral"}) for n in ("eq_", "gt")),
    binary("divide", data={"1": "positive"}),
    binary("remainder", data={"0": "integral", "1": "integral_positive"}),
    ternary("lerp"),
    reduction("std"),
    reduction("argmax", data={"0": "integral"}),
    *(creation(n) for n in ("fill", "moreh_full", "zeros_like")),
    *(data_movement(n) for n in ("copy", "split", "reshard", "tilize_with_val_padding", "untilize_with_unpadding")),
    data_movement("interleaved_to_sharded_partial"),
    data_movement("sharded_to_interleaved_partial", golden=adapters.sharded_to_interleaved_partial),
    data_movement("fold"),
    data_movement("experimental.convert_to_chw", golden=adapters.convert_to_chw),
    *(data_movement(n) for n in ("fill_cache", "update_cache")),
    data_movement(
        "experimental.paged_fused_update_cache",
        golden=adapters.paged_fused_update_cache,
        data={"page_table": "page_table:0|cache_tensor1", "update_idxs_tensor": "position:page_table:0|cache_tensor1"},
    ),
    normalization("layer_norm", golden=adapters.layer_norm),
    *(normalization(n) for n in ("group_norm", "softmax_in_place", "scale_mask_softmax_in_place")),
    normalization("scale_causal_mask_hw_dims_softmax_in_place"),
    normalization("transformer.attention_softmax_"),
    conv_pool("max_pool2d", golden=adapters.max_pool2d),
    conv_pool("conv_transpose2d", golden=adapters.conv_transpose2d),
    conv_pool("global_avg_pool2d"),
    transformer(
        "transformer.scaled_dot_product_attention_decode",
        data={"cur_pos_tensor": "position:page_table_tensor:1|input_tensor_k"},
    ),
    transformer(
        "transformer.paged_scaled_dot_product_attention_decode",
        data={
            "3|page_table_tensor": "page_table:1|input_tensor_k",
            "cur_pos_tensor": "position:3|page_table_tensor:1|input_tensor_k",
        },
    ),
    transformer(
        "transformer.chunked_scaled_dot_product_attention",
        data={"3|page_table_tensor": "page_table:1|input_tensor_k"},
    ),
    transformer("experimental.nlp_concat_heads", golden=adapters.nlp_concat_heads),
    transformer("experimental.nlp_concat_heads_decode", golden=adapters.nlp_concat_heads_decode),
    transformer("experimental.nlp_create_qkv_heads", golden=adapters.nlp_create_qkv_heads),
    transformer("experimental.nlp_create_qkv_heads_falcon7b", golden=adapters.nlp_create_qkv_heads_falcon7b),
    transformer("experimental.nlp_create_qkv_heads_segformer", golden=adapters.nlp_create_qkv_heads_segformer),
    transformer("experimental.create_qkv_heads", golden=adapters.create_qkv_heads),
    *(transformer(f"{ns}.concatenate_heads") for ns in ("transformer", "experimental")),
    *(transformer(f"{ns}.split_query_key_value_and_split_heads") for ns in ("transformer", "experimental")),
    transformer("experimental.rotary_embedding", golden=adapters.rotary_embedding),
    transformer(
        "experimental.rotary_embedding_llama_fused_qk",
        golden=adapters.rotary_embedding_llama_fused_qk,
        data={"4|trans_mat": "rope_trans_mat"},
    ),
)


def _takes_two(first: Any, second: Any) -> Any:
    return first


def _golden_rejects_call(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """A golden written for two positional arguments, handed a traced call with more (sweepctl's bug)."""
    return _takes_two(*args)


# Test-only ops, present only when SWEEPCTL_ENABLE_TEST_OPS=1 (benchmarks and fault tests); the
# executor runs them itself (workers/testops.py): no-op, hang, hang ignoring SIGTERM, a signal, an
# exit, an exception, memory exhaustion, a sleep of `seconds`. The last two run through the real
# backend like any op and fail in sweepctl's own code (ERROR): `prepare_error` in building its
# inputs (an index slot naming a tensor the vector lacks), `golden_error` in its golden.
_TEST_OPS: tuple[OpDef, ...] = (
    *(
        OpDef(f"sweepctl.test.{name}", "test", golden=_noop, test_only=True)
        for name in ("noop", "hang", "hang_ignore_sigterm", "segv", "exit", "raise", "oom", "sleep")
    ),
    OpDef("sweepctl.test.prepare_error", "test", golden=_noop, data={"0": "index:weight"}),
    OpDef("sweepctl.test.golden_error", "test", golden=_golden_rejects_call),
)

CATALOGUE: dict[str, OpDef] = {op.name: op for op in _OPS}


def test_ops_enabled() -> bool:
    return os.environ.get(TEST_OPS_ENV) == "1"


def lookup(op: str) -> OpDef | None:
    """The definition of a canonical op name, or None (its vectors end NOT_RUN)."""
    found = CATALOGUE.get(op)
    if found is None and test_ops_enabled():
        found = next((t for t in _TEST_OPS if t.name == op), None)
    return found


def timeout_for(op: str, profile: Any) -> float:
    """A vector's timeout: its op's, scaled by its machine profile's timeout_scale (None: unscaled)."""
    opdef = lookup(op)
    base = opdef.timeout if opdef else DEFAULT_TIMEOUT
    return base * (profile.timeout_scale if profile else 1.0)


def no_definition_reason(op: str) -> str:
    return f"no sweep definition for {op}"


def families() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for op in CATALOGUE.values():
        out.setdefault(op.family, []).append(op.name)
    return out
