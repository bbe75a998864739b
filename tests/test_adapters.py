"""The adapters compute what the ops do, checked against independent constructions (on the emulated
path the adapter is both the reference and the stand-in for the op, so the store test alone cannot
tell a wrong adapter from a right one). Pure torch: no ttnn needed."""

from __future__ import annotations

import torch

from sweeps import adapters


def call(adapter, *args, **kwargs):
    return adapter(None, list(args), kwargs, {})


def labelled(batch: int, seq: int, heads: int, dim: int) -> torch.Tensor:
    """[B, 1, S, heads * dim] whose element (b, s, h, d) holds 1000 * h + d + 0.5 * s: every head
    and position is told apart by value."""
    h = torch.arange(heads).view(1, 1, heads, 1) * 1000.0
    d = torch.arange(dim).view(1, 1, 1, dim).float()
    s = torch.arange(seq).view(1, seq, 1, 1) * 0.5
    return (h + d + s).expand(batch, seq, heads, dim).reshape(batch, 1, seq, heads * dim)


def test_nlp_create_qkv_heads_splits_heads_and_concat_heads_undoes_it():
    x = labelled(2, 4, 8 + 2 * 2, 16)  # 8 Q heads, 2 KV heads
    q, k, v = call(adapters.nlp_create_qkv_heads, x, num_heads=8, num_kv_heads=2)
    assert q.shape == (2, 8, 4, 16) and k.shape == (2, 2, 16, 4) and v.shape == (2, 2, 4, 16)  # K transposed
    assert q[1, 3, 2, 5] == 3000 + 5 + 1.0
    assert k[0, 1, 7, 3] == (8 + 1) * 1000 + 7 + 1.5
    assert v[0, 0, 0, 0] == (8 + 2) * 1000
    _, k_plain, _ = call(adapters.nlp_create_qkv_heads, x, num_heads=8, num_kv_heads=2, transpose_k_heads=False)
    assert torch.equal(k_plain.transpose(-2, -1), k)
    assert torch.equal(call(adapters.nlp_concat_heads, q), x[..., : 8 * 16])


def test_nlp_create_qkv_heads_with_a_separate_kv_input():
    q_in, kv_in = labelled(1, 2, 4, 8), labelled(1, 2, 2, 8)
    q, k, v = call(adapters.nlp_create_qkv_heads, q_in, kv_in, num_heads=4, num_kv_heads=1, transpose_k_heads=False)
    assert torch.equal(q, q_in.reshape(1, 2, 4, 8).permute(0, 2, 1, 3))
    assert torch.equal(k[0, 0], kv_in[0, 0, :, :8]) and torch.equal(v[0, 0], kv_in[0, 0, :, 8:])


def test_create_qkv_heads_reads_groups_of_q_heads_then_k_then_v():
    x = labelled(1, 3, 2 * (4 + 2), 8)  # 2 KV groups of [4 Q heads, K, V]
    q, k, v = call(adapters.create_qkv_heads, x, num_heads=8, num_kv_heads=2, transpose_k_heads=False)
    assert [int(q[0, h, 0, 0]) // 1000 for h in range(8)] == [0, 1, 2, 3, 6, 7, 8, 9]
    assert [int(k[0, g, 0, 0]) // 1000 for g in range(2)] == [4, 10]
    assert [int(v[0, g, 0, 0]) // 1000 for g in range(2)] == [5, 11]


def test_falcon7b_and_segformer_head_layouts():
    q, k, v = call(adapters.nlp_create_qkv_heads_falcon7b, labelled(1, 2, 73, 64))
    assert (q.shape, k.shape, v.shape) == ((1, 71, 2, 64), (1, 1, 2, 64), (1, 1, 2, 64))
    assert k[0, 0, 0, 0] == 71000 and v[0, 0, 0, 0] == 72000
    heads = call(adapters.nlp_create_qkv_heads_segformer, labelled(1, 5, 8, 32))
    assert heads.shape == (1, 8, 5, 32) and heads[0, 7, 4, 31] == 7000 + 31 + 2.0


def test_nlp_concat_heads_decode_drops_padding_heads():
    x = torch.randn(1, 4, 32, 16)  # 4 users, heads padded to 32
    out = call(adapters.nlp_concat_heads_decode, x, num_heads=8)
    assert out.shape == (1, 1, 4, 128)
    assert torch.equal(out[0, 0, 2], x[0, 2, :8].reshape(-1))


def rotation_matrix() -> torch.Tensor:
    """tt-metal's transformation matrix: each (even, odd) pair (a, b) -> (-b, a)."""
    t = torch.zeros(32, 32)
    t[torch.arange(0, 32, 2), torch.arange(1, 32, 2)] = 1.0
    t[torch.arange(1, 32, 2), torch.arange(0, 32, 2)] = -1.0
    return t.reshape(1, 1, 32, 32)


def test_rotary_embedding_llama_fused_qk_rotates_interleaved_pairs():
    q, k = torch.randn(1, 2, 4, 64), torch.randn(1, 2, 1, 64)
    angle = torch.rand(1, 4, 1, 32) * 3.0
    cos = torch.cos(angle).repeat_interleave(2, dim=-1)  # the doubled format: c0 c0 c1 c1 ...
    sin = torch.sin(angle).repeat_interleave(2, dim=-1)
    out_q, out_k = call(adapters.rotary_embedding_llama_fused_qk, q, k, cos, sin, rotation_matrix())
    for x, out, rows in ((q, out_q, slice(0, 2)), (k, out_k, slice(2, 4))):
        even, odd, a = x[..., 0::2], x[..., 1::2], angle[:, rows]
        expected = torch.stack((even * a.cos() - odd * a.sin(), even * a.sin() + odd * a.cos()), dim=-1).flatten(-2)
        assert torch.allclose(out, expected, atol=1e-5)


def test_paged_fused_update_cache_writes_each_users_token_through_the_page_table():
    cache = torch.zeros(8, 1, 4, 2)  # 8 blocks of 4 positions
    tokens = torch.arange(1, 7, dtype=torch.float32).reshape(1, 3, 1, 2)  # 3 users
    page_table = torch.tensor([[5, 1], [2, 7], [0, 3]])
    positions = torch.tensor([6, 1, -1])  # user 2 skipped
    one, two = call(adapters.paged_fused_update_cache, cache, tokens, cache, tokens * 10,
                    update_idxs_tensor=positions, page_table=page_table)  # fmt: skip
    assert torch.equal(one[1, 0, 2], torch.tensor([1.0, 2.0]))  # user 0: position 6 -> block table[0][1] = 1, row 2
    assert torch.equal(one[2, 0, 1], torch.tensor([3.0, 4.0]))  # user 1: position 1 -> block table[1][0] = 2, row 1
    assert torch.equal(two[2, 0, 1], torch.tensor([30.0, 40.0]))
    assert int((one != 0).sum()) == 4 and int((cache != 0).sum()) == 0  # nothing else written, input untouched


def test_max_pool2d_on_flat_nhwc_matches_torch():
    x = torch.randn(2, 3, 9, 10)  # N C H W
    flat = x.permute(0, 2, 3, 1).reshape(1, 1, 2 * 9 * 10, 3)
    out = call(adapters.max_pool2d, flat, 2, 9, 10, 3, [3, 3], [2, 2], [1, 1], [1, 1])
    expected = torch.nn.functional.max_pool2d(x, 3, stride=2, padding=1)
    assert torch.equal(out, expected.permute(0, 2, 3, 1).reshape(1, 1, -1, 3))


def test_conv_transpose2d_on_flat_nhwc_matches_torch():
    x, w, b = torch.randn(1, 4, 5, 6), torch.randn(4, 2, 3, 3), torch.randn(2)
    flat = x.permute(0, 2, 3, 1).reshape(1, 1, 30, 4)
    out = call(adapters.conv_transpose2d, input_tensor=flat, weight_tensor=w, bias_tensor=b.reshape(1, 1, 1, 2),
               in_channels=4, out_channels=2, batch_size=1, input_height=5, input_width=6, kernel_size=[3, 3],
               stride=[2, 2], padding=[1, 1], output_padding=[1, 1], dilation=[1, 1], groups=1)  # fmt: skip
    expected = torch.nn.functional.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
    assert out.shape == (1, 1, 10 * 12, 2)
    assert torch.allclose(out, expected.permute(0, 2, 3, 1).reshape(1, 1, -1, 2), atol=1e-5)


def test_rotary_embedding_prefill_without_token_index():
    x, angle = torch.randn(1, 2, 8, 16), torch.rand(1, 1, 8, 8)
    cos = torch.cat((angle.cos(), angle.cos()), dim=-1)
    sin = torch.cat((angle.sin(), angle.sin()), dim=-1)
    out = call(adapters.rotary_embedding, x, cos, sin)
    first, second = x[..., :8], x[..., 8:]
    expected = torch.cat((first * angle.cos() - second * angle.sin(), second * angle.cos() + first * angle.sin()), -1)
    assert torch.allclose(out, expected, atol=1e-6)
