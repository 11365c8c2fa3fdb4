"""Batched chunk attention for the Qwen vision towers: the same features and pixel gradients as transformers' loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_adapters import noise_image

from visalign.models import load_vlm, pil_to_tensor
from visalign.models.vision_attention import batch_vision_attention, chunked_attention


@pytest.mark.parametrize(
    "lengths", [[16, 16, 16, 16], [16, 8, 16, 0, 4, 8, 16]], ids=["equal", "unequal-out-of-order-and-empty"]
)
def test_chunked_attention_matches_one_call_per_chunk(lengths):
    torch.manual_seed(0)
    q, k, v = (3 * torch.randn(sum(lengths), 3, 8) for _ in range(3))  # sharp softmax: mistakes show
    expected, start = [], 0
    for length in lengths:
        chunk = slice(start, start + length)
        parts = [t[chunk].transpose(0, 1) for t in (q, k, v)]  # (heads, length, dim)
        expected.append(F.scaled_dot_product_attention(*parts, scale=0.3).transpose(0, 1))
        start += length
    got = chunked_attention(q, k, v, lengths, 0.3)
    assert got.shape == q.shape
    torch.testing.assert_close(got, torch.cat(expected), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("sizes", [[(56, 56), (56, 56)], [(56, 84), (84, 112)]], ids=["equal", "unequal"])
def test_batched_tower_matches_the_per_window_loop(tiny_checkpoints, family, sizes):
    """Features and the gradient back to the pixels agree with transformers' own path, windows equal or not."""
    path = str(tiny_checkpoints[family])
    loop = load_vlm(path, batched_vision_attention=False)
    batched = load_vlm(path)
    images = [pil_to_tensor(noise_image(h, w, seed)) for seed, (h, w) in enumerate(sizes)]

    def features_and_grad(vlm):
        pixels = [im.clone().requires_grad_(True) for im in images]
        features = torch.cat([e.features for e in vlm.encode_images(pixels)])
        (features.square().sum()).backward()
        return features.detach(), [p.grad for p in pixels]

    loop_features, loop_grads = features_and_grad(loop)
    batched_features, batched_grads = features_and_grad(batched)
    assert loop_features.abs().sum() > 0
    torch.testing.assert_close(batched_features, loop_features, atol=1e-5, rtol=1e-4)
    for got, want in zip(batched_grads, loop_grads, strict=True):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_only_qwen_towers_change(tiny_checkpoints):
    qwen = load_vlm(str(tiny_checkpoints["qwen2_5_vl"]), batched_vision_attention=False)
    depth = qwen.model.config.vision_config.depth
    assert batch_vision_attention(qwen.model, "qwen2_5_vl") == depth
    llava = load_vlm(str(tiny_checkpoints["llava"]))
    assert batch_vision_attention(llava.model, "llava") == 0


def test_a_plan_is_made_once_per_cu_seqlens_tensor():
    """Every block of a kind gets the same cu_seqlens tensor: one host sync per forward and kind, not per block."""
    from visalign.models.vision_attention import _plan_for

    cu_seqlens = torch.tensor([0, 16, 24, 40])
    plan = _plan_for(cu_seqlens)
    assert _plan_for(cu_seqlens) is plan
    assert [(length, count) for length, count, _ in plan.groups] == [(16, 2), (8, 1)]
    # groups concatenated: the 16-token chunks (rows 0-31: positions 0-15, 24-39), then the 8-token one (rows
    # 32-39: positions 16-23); sequence order reads rows 0-15, 32-39, 16-31
    assert plan.order.tolist() == [*range(0, 16), *range(32, 40), *range(16, 32)]
    assert _plan_for(cu_seqlens.clone()) is not plan
