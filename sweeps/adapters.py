"""Per-op adapters: where a traced call and ttnn's golden disagree, the golden computation of that
call, written from what the op does (tt-metal's model_traced sweep of the op read for how it builds
the call; ttnn's docstrings for the semantics).

Each adapter has the catalogue's golden signature `(ttnn, args, kwargs, ctx) -> torch tensor`:
`args`/`kwargs` are the traced call's, after substitution (torch tensors in the tensor slots; ttnn
enums and memory configs, plain lists and numbers elsewhere); `ctx["device_inputs"]` holds a
collective's per-device inputs. An adapter reads an argument where the traced call put it
(positionally or by name), and raises when the call holds something it cannot compute: that is
sweepctl's error, never the op's. A view (`(output, args, kwargs) -> tensor`) picks what of an
output is defined, for ops whose output is partly unspecified (random values, padded stat tiles).

Runs in executor processes only (imports torch lazily; sweeps.catalogue stays import-light).
"""

from __future__ import annotations

import math
import re
from typing import Any

_REQUIRED = object()
TILE = 32


def take(args: list[Any], kwargs: dict[str, Any], position: int, *names: str, default: Any = _REQUIRED) -> Any:
    """The argument at `position` or under one of `names` (the traced call used either)."""
    for name in names:
        if name in kwargs:
            return kwargs[name]
    if position < len(args):
        return args[position]
    if default is _REQUIRED:
        raise TypeError(f"argument {position} ({'/'.join(names)}) is missing from the call")
    return default


def _ints(value: Any) -> list[int]:
    """A shape or dim list as traced (list, tuple or ttnn.Shape) -> [int]."""
    return [int(v) for v in value]


# --- collectives: the golden sees every device's input (prepare()'s device_inputs) --------------


def gather(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """all_gather: every device ends with the inputs of the ring concatenated along `dim`."""
    import torch

    return torch.cat(ctx["device_inputs"], dim=int(take(args, kwargs, 1, "dim", default=0)))


def reduce_scatter(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """reduce_scatter: the sum over the ring, of which device 0 keeps the first chunk along `dim`."""
    import torch

    dim = int(take(args, kwargs, 1, "dim", default=0))
    total = torch.stack(ctx["device_inputs"]).sum(0)
    return torch.chunk(total, len(ctx["device_inputs"]), dim=dim)[0]


# --- data movement -------------------------------------------------------------------------------


def reshape(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """reshape(input, shape[, padded_shape], ...): ttnn's golden takes exactly (input, shape); the
    traced call may add the padded shape and a memory config positionally."""
    return take(args, kwargs, 0, "input_tensor").reshape(_ints(take(args, kwargs, 1, "shape")))


def repeat(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """The input tiled `repeat_dims` times per dim (fewer dims than the input: leading 1s); traced
    positionally or as `repeat_dims`, which ttnn's golden (`shape`) does not take."""
    source = take(args, kwargs, 0, "input_tensor")
    times = _ints(take(args, kwargs, 1, "repeat_dims", "shape"))
    return source.repeat(*([1] * (source.dim() - len(times)) + times))


def embedding(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """Rows of the weight; models trace the weight as [1, 1, vocab, dim] (ttnn's golden wants 2-D),
    positionally or as `weight`."""
    import torch

    indices = take(args, kwargs, 0, "input_tensor")
    weight = take(args, kwargs, 1, "weight")
    return torch.nn.functional.embedding(indices.long(), weight.reshape(-1, weight.shape[-1]))


def scatter(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """scatter(input, dim, index, src): torch wants int64 indices (the traced index is UINT16)."""
    source = take(args, kwargs, 0, "input")
    dim = int(take(args, kwargs, 1, "dim"))
    index = take(args, kwargs, 2, "index")
    src = take(args, kwargs, 3, "src")
    return source.scatter(dim, index.long(), src.to(source.dtype))


def fast_reduce_nc(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """Sum over the outer dims named by `dims`, keeping them as size 1."""
    source = take(args, kwargs, 0, "input")
    dims = _ints(take(args, kwargs, 1, "dims"))
    return source.sum(dim=dims, keepdim=True)


# --- paged KV caches: the cache tensor is updated in place and is the op's result -------------


def paged_fill_cache(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """Writes one user's prefill K/V (input [1, heads, seq, dim]) into the cache pages its page-table
    row lists, one block of `block_size` tokens per page (cache [blocks, heads, block_size, dim])."""
    cache = take(args, kwargs, 0, "cache_tensor").clone()
    source = take(args, kwargs, 1, "input_tensor")
    table = take(args, kwargs, 2, "page_table").long()
    user = int(take(args, kwargs, 3, "batch_idx", default=0))
    block = cache.shape[2]
    rows = source[0] if source.shape[0] == 1 else source[user]
    for page in range(math.ceil(rows.shape[1] / block)):
        chunk = rows[:, page * block : (page + 1) * block]
        cache[int(table[user, page]), :, : chunk.shape[1]] = chunk
    return cache


def paged_update_cache(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """Writes each user's decode token (input [1, users, heads, dim]) at its position: through the
    page table when there is one (position // block_size picks the page), else into the user's own
    cache row. A negative position skips the user."""
    cache = take(args, kwargs, 0, "cache_tensor").clone()
    source = take(args, kwargs, 1, "input_tensor")
    positions = kwargs.get("update_idxs_tensor")
    positions = [int(p) for p in (positions.reshape(-1) if positions is not None else kwargs["update_idxs"])]
    table = kwargs.get("page_table")
    offset = int(kwargs.get("batch_offset") or 0)
    heads, block = cache.shape[1], cache.shape[2]
    for user, position in enumerate(positions):
        if position < 0:
            continue
        token = source[0, user + offset, :heads]
        if table is not None:
            cache[int(table[user, position // block]), :, position % block] = token
        else:
            cache[user, :, position] = token
    return cache


# --- transformer -----------------------------------------------------------------------------


def rotary_embedding_llama(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """x * cos + (x @ trans_mat) * sin, the matmul applied per 32-wide tile of the head dim as the
    kernel does (with the real transformation matrix that rotates pairs). Prefill: x [b, heads, seq,
    dim], cos/sin [1, 1|heads, seq, dim], trans_mat [1, 1, 32, 32]. Decode: x [1, users, heads, dim],
    cos/sin [1, users, 1, dim], one 32x32 trans_mat per user stacked in [1, 1, users*32, 32]."""
    x = take(args, kwargs, 0, "input_tensor")
    cos = take(args, kwargs, 1, "cos_cache")
    sin = take(args, kwargs, 2, "sin_cache")
    trans = take(args, kwargs, 3, "trans_mat")
    decode = bool(take(args, kwargs, 4, "is_decode_mode", default=False))
    *lead, dim = x.shape
    tiles = x.reshape(*lead, dim // TILE, TILE)
    mats = trans.reshape(-1, TILE, TILE)
    if decode and mats.shape[0] > 1:  # per user: [1, users, 1, 32, 32] against [1, users, heads, tiles, 32]
        rotated = tiles @ mats[: lead[1]].reshape(1, lead[1], 1, TILE, TILE)
    else:
        rotated = tiles @ mats[0]
    return x * cos + rotated.reshape(x.shape) * sin


def nlp_create_qkv_heads_decode(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """Fused QKV [1, 1, users, (heads + 2 * kv_heads) * head_dim] -> Q heads [1, users, heads,
    head_dim] (the first output, the one judged)."""
    fused = take(args, kwargs, 0, "input_tensor")
    heads = int(take(args, kwargs, 1, "num_heads"))
    kv_heads = int(take(args, kwargs, 2, "num_kv_heads", default=heads))
    users = fused.shape[2]
    head_dim = fused.shape[-1] // (heads + 2 * kv_heads)
    return fused[0, 0, :users, : heads * head_dim].reshape(1, users, heads, head_dim)


# --- unary and matmul -------------------------------------------------------------------------


def sigmoid_accurate(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """ttnn's golden takes the input only; the traced call adds the mode flag (and a memory config)."""
    import torch

    return torch.sigmoid(take(args, kwargs, 0, "input_tensor"))


_ACTIVATION = re.compile(r"(?<![a-z0-9_])(relu|silu|gelu|sigmoid|tanh)(?![a-z0-9_])")


def _activation(value: Any) -> Any:
    """A traced activation as torch: `"silu"`, `UnaryOpType.SILU`, a `UnaryWithParam` object or its
    repr text (`UnaryWithParam(op_type=UnaryOpType::SILU)`)."""
    import torch

    functions = {
        "relu": torch.relu,
        "silu": torch.nn.functional.silu,
        "gelu": torch.nn.functional.gelu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }
    op_type = getattr(value, "op_type", value)
    text = str(getattr(op_type, "name", None) or op_type).lower()
    found = _ACTIVATION.search(text)
    if found is None:
        raise ValueError(f"activation {value!r} has no golden in sweeps.adapters")
    return functions[found.group(1)]


def linear(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """a @ b (+ bias, a row broadcast over the output rows) then the activation, the traced
    transposes applied; batched weights broadcast as matmul does. ttnn's golden reads a 2-D bias
    by its length, not its rank."""
    a = take(args, kwargs, 0, "input_tensor_a")
    b = take(args, kwargs, 1, "input_tensor_b", "weight")
    if take(args, kwargs, 2, "transpose_a", default=False):
        a = a.transpose(-1, -2)
    if take(args, kwargs, 3, "transpose_b", default=False):
        b = b.transpose(-1, -2)
    out = a @ b.to(a.dtype)
    while out.dim() > max(a.dim(), 1) and out.shape[0] == 1:  # a weight of higher rank adds no output dims
        out = out.squeeze(0)
    bias = kwargs.get("bias")
    if bias is not None:
        out = out + bias.reshape(-1, bias.shape[-1])[0]
    config = kwargs.get("program_config")  # a ttnn object, a traced map, or one read from its repr
    if isinstance(config, dict):
        fused = config.get("fields", config).get("fused_activation")
    else:
        fused = getattr(config, "fused_activation", None)
    for activation in (fused, kwargs.get("activation")):
        if activation is not None:
            out = _activation(activation)(out)
    return out


# --- creation -----------------------------------------------------------------------------------


def rand(ttnn: Any, args: list[Any], kwargs: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """Uniform values in [low, high); only their range is judged (view `in_range`): device and torch
    generators differ."""
    import torch

    low = float(kwargs.get("low", 0.0))
    high = float(kwargs.get("high", 1.0))
    shape = _ints(take(args, kwargs, 0, "shape"))
    generator = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=generator) * (high - low) + low


# --- views: what of an output is defined ----------------------------------------------------------


def in_range(output: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """1 where a random value lies in [low, high], 0 elsewhere (the bound is inclusive: rounding to
    the output dtype may reach it)."""
    low = float(kwargs.get("low", 0.0))
    high = float(kwargs.get("high", 1.0))
    return ((output >= low) & (output <= high)).float()


def stat_columns(output: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Column 0 of each 32-wide block: where rms_norm_pre_all_gather writes sum(x^2); the rest of
    each stats tile is unspecified."""
    return output[..., ::TILE]
