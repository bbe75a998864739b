"""The op catalogue: for each covered op, its family, how its inputs are filled, its golden, its
PCC thresholds and its timeout. The one place that says which ops sweepctl can run.

Families make a new op one line: the family knows how a traced config of that shape becomes
inputs and a golden. Goldens are ttnn's own (`ttnn.get_golden_function`) unless the op has an
adapter (sweeps/adapters.py: the golden of the traced call where ttnn's golden cannot take it, or
ttnn has none). This module imports neither ttnn nor torch, so the coordinator and the CLI can read
it; goldens run in the executor.

Slots are positions ("0", "1"…) or kwarg names; "1|weight" means the one of them the call uses.
`requires`: the slots the golden cannot do without; a traced config lacking one is NOT_RUN naming
it, decided at expansion. Data kinds per slot (sweeps.materialize.generate): "normal" (randn, the
default), "positive" (uniform 0.5..2: rsqrt, log, divisors, gathered norm statistics), "bool" (0/1
predicate), "index:<slot>" (rows of <slot>'s tensor: embedding), "distinct:<slot>" (distinct
positions along the last dim of <slot>, per row: scatter), "page_table:<slot>" (distinct pages of
the cache in <slot>), "position:<table slot>:<cache slot>" (token positions the page table covers),
"rope_trans_mat" (the rotary transformation matrix), "integral" and "integral_positive"
(small integers, exact in every float dtype: comparisons, argmax, remainder).
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
    requires: tuple[str, ...] = ("0|input_tensor|input",)
    view: Callable[..., Any] | None = None  # (output, args, kwargs) -> what of the output is judged

    @property
    def adapter(self) -> bool:
        """Its golden is sweepctl's own (sweeps.adapters), not ttnn's."""
        return self.golden is not None

    def threshold_of(self, named: list[tuple[str, str]]) -> tuple[float, str]:
        """PCC required and which tensor's dtype set it ("input 1 BFLOAT8_B", "output BFLOAT16"):
        that of the least precise dtype among (tensor, dtype) pairs; the first such tensor names it."""
        floats = [(who, d) for who, d in named if d in THRESHOLDS]
        if not floats:  # integer results: exact up to the comparison's float64 rounding
            return 0.9999, " ".join(filter(None, (named[0][0], named[0][1]))) if named else "no tensor"
        who, worst = min(floats, key=lambda item: _PRECISION_ORDER.index(item[1]))
        return self.thresholds.get(worst, THRESHOLDS[worst]), " ".join(filter(None, (who, worst)))

    def data_kind(self, slot: str) -> str:
        for slots, kind in self.data.items():
            if slot in slots.split("|"):
                return kind
        return "normal"

    def missing(self, positional: int, names: Any) -> str | None:
        """The first required argument a call with `positional` args and kwargs `names` lacks, as
        "1 (slice_start)"; None when it has them all."""
        for required in self.requires:
            options = required.split("|")
            if not any(o in names or (o.isdigit() and int(o) < positional) for o in options):
                return options[0] + (f" ({options[1]})" if len(options) > 1 else "")
        return None


def _noop(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    return args[0]


# --- families ------------------------------------------------------------------------------------


def _family(family: str, **defaults: Any) -> Callable[..., OpDef]:
    def make(name: str, **overrides: Any) -> OpDef:
        return OpDef(f"ttnn.{name}", family, **{**defaults, **overrides})

    make.__doc__ = f"An op of the {family} family."
    return make


_IN = "0|input_tensor|input"
unary = _family("unary")
binary = _family("binary", requires=("0|input_tensor_a|input_tensor", "1|input_tensor_b|other"))
ternary = _family("ternary")
reduction = _family("reduction")
data_movement = _family("data_movement")
matmul = _family("matmul", timeout=60.0, requires=("0|input_tensor_a", "1|input_tensor_b|weight"))
normalization = _family("normalization")
conv_pool = _family("conv_pool", timeout=120.0)
embedding = _family("embedding", golden=adapters.embedding, data={"0|input_tensor": "index:1|weight"},
                    requires=("0|input_tensor", "1|weight"))  # fmt: skip
typecast = _family("typecast", requires=(_IN, "1|dtype"))
creation = _family("creation", requires=("0|shape",))
transformer = _family("transformer", timeout=60.0)
kv_cache = _family("kv_cache", timeout=60.0)
ccl = _family("ccl", collective=True, timeout=60.0, requires=(_IN, "1|dim"))

_OPS: tuple[OpDef, ...] = (
    *(unary(n) for n in ("relu", "silu", "gelu", "sigmoid", "exp", "neg", "tanh", "abs")),
    unary("sigmoid_accurate", golden=adapters.sigmoid_accurate),
    unary("rsqrt", data={"0": "positive"}),
    *(binary(n) for n in ("add", "multiply", "subtract", "maximum", "minimum")),
    binary("div", data={"1|input_tensor_b": "positive"}),  # a model divides by norms and counts, not by ~0
    ternary("clamp"),
    ternary("where", data={"0": "bool"}),
    *(reduction(n) for n in ("sum", "mean", "max", "min")),
    reduction("topk", requires=(_IN, "1|k")),
    reduction("experimental.fast_reduce_nc", golden=adapters.fast_reduce_nc, requires=(_IN, "1|dims")),
    data_movement("pad", requires=(_IN, "1|padding|output_padded_shape")),
    data_movement("permute", requires=(_IN, "1|dims")),
    data_movement("reshape", golden=adapters.reshape, requires=(_IN, "1|shape")),
    data_movement("transpose", requires=(_IN, "1|dim0", "2|dim1")),
    data_movement("concat", requires=("0|tensors|input_tensors",)),
    data_movement("slice", requires=(_IN, "1|slice_start|starts", "2|slice_end|ends")),
    data_movement("repeat", golden=adapters.repeat, requires=(_IN, "1|repeat_dims|shape")),
    data_movement("unsqueeze", requires=(_IN, "1|dim")),
    data_movement(
        "scatter",
        golden=adapters.scatter,
        data={"2|index": "distinct:0|input"},
        requires=("0|input", "1|dim", "2|index", "3|src"),
    ),  # fmt: skip
    *(
        data_movement(n)
        for n in (
            "squeeze",
            "unsqueeze_to_4D",
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
    matmul("linear", golden=adapters.linear),
    *(normalization(n) for n in ("softmax", "rms_norm")),
    normalization("rms_norm_pre_all_gather", view=adapters.stat_columns),
    normalization("rms_norm_post_all_gather", data={"1|stats": "positive"}, requires=(_IN, "1|stats")),
    conv_pool("conv2d"),
    conv_pool("upsample"),
    embedding("embedding"),
    typecast("typecast"),
    *(creation(n) for n in ("zeros", "ones")),
    creation("full", requires=("0|shape", "1|fill_value")),
    creation("ones_like", requires=(_IN,)),
    creation("rand", golden=adapters.rand, view=adapters.in_range),
    transformer("transformer.scaled_dot_product_attention"),
    transformer(
        "experimental.rotary_embedding_llama",
        golden=adapters.rotary_embedding_llama,
        data={"3|trans_mat": "rope_trans_mat"},
        requires=(_IN, "1|cos_cache", "2|sin_cache", "3|trans_mat"),
    ),
    transformer(
        "experimental.nlp_create_qkv_heads_decode",
        golden=adapters.nlp_create_qkv_heads_decode,
        requires=(_IN, "1|num_heads"),
    ),  # fmt: skip
    kv_cache(
        "experimental.paged_fill_cache",
        golden=adapters.paged_fill_cache,
        data={"2|page_table": "page_table:0|cache_tensor"},
        requires=("0|cache_tensor", "1|input_tensor", "2|page_table"),
    ),
    kv_cache(
        "experimental.paged_update_cache",
        golden=adapters.paged_update_cache,
        data={"page_table": "page_table:0|cache_tensor", "update_idxs_tensor": "position:page_table:0|cache_tensor"},
        requires=("0|cache_tensor", "1|input_tensor", "update_idxs_tensor|update_idxs"),
    ),
    ccl("all_gather", golden=adapters.gather),
    ccl("experimental.all_gather_async", golden=adapters.gather),
    ccl("reduce_scatter", golden=adapters.reduce_scatter),
    ccl("experimental.reduce_scatter_minimal_async", golden=adapters.reduce_scatter),
    # --- tt-metal model_traced modules beyond the repo's stores
    # (tests/data/tt_metal_model_traced_modules.txt names each module's op; adapters in sweeps/adapters.py)
    *(unary(n, golden=adapters.input_only(n)) for n in ("cos", "sin", "erf", "floor", "swish")),
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
# inputs (a data kind naming a tensor the vector lacks), `golden_error` in its golden.
_TEST_OPS: dict[str, OpDef] = {
    op.name: op
    for op in (
        *(
            OpDef(f"sweepctl.test.{name}", "test", golden=_noop, test_only=True, requires=())
            for name in ("noop", "hang", "hang_ignore_sigterm", "segv", "exit", "raise", "oom", "sleep")
        ),
        OpDef("sweepctl.test.prepare_error", "test", golden=_noop, data={"0": "index:weight"}, requires=()),
        OpDef("sweepctl.test.golden_error", "test", golden=_golden_rejects_call, requires=()),
    )
}  # by name: the executor looks one up per vector

CATALOGUE: dict[str, OpDef] = {op.name: op for op in _OPS}


def test_ops_enabled() -> bool:
    return os.environ.get(TEST_OPS_ENV) == "1"


def lookup(op: str) -> OpDef | None:
    """The definition of a canonical op name, or None (its vectors end NOT_RUN)."""
    found = CATALOGUE.get(op)
    if found is None and test_ops_enabled():
        found = _TEST_OPS.get(op)
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
