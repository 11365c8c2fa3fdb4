"""Batched chunk attention for the Qwen vision towers (Qwen2.5-VL, Qwen3-VL).

With ``sdpa`` attention, transformers' Qwen vision attention runs one attention call per chunk: per
image in the full-attention blocks and per window in Qwen2.5-VL's windowed blocks. Four 448x448 images make 64
windows, so a 32-block tower issues about 1,800 tiny attention calls per forward, each with its own kernel launches
and Python overhead. Chunks of equal length can share one call: gather them into a batch of sequences, run
``scaled_dot_product_attention`` once per distinct length (usually one or a handful), and scatter the results
back. The arithmetic per chunk is unchanged, so outputs match the per-chunk loop up to float rounding.

Flash attention (``flash_attention_2``/``3``) already takes the packed chunks in one call, and eager attention
computes its softmax differently, so both keep the original path.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

# transformers class name of each family's vision attention module.
_ATTENTION_CLASSES = {"qwen2_5_vl": "Qwen2_5_VLVisionAttention", "qwen3_vl": "Qwen3VLVisionAttention"}


def chunked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: list[int], scale: float
) -> torch.Tensor:
    """Bidirectional attention within consecutive chunks of a packed sequence, one call per distinct length.

    Args:
        query: (sequence, heads, head dim), the chunks laid end to end.
        key: like ``query``.
        value: like ``query``.
        lengths: the chunks' lengths in order; they sum to the sequence length.
        scale: the softmax scale.

    Returns:
        (sequence, heads, head dim): each chunk's attention output in place.
    """
    sequence, heads, dim = query.shape
    starts = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
    groups: dict[int, list[int]] = defaultdict(list)
    for start, length in zip(starts.tolist(), lengths, strict=True):
        if length:
            groups[length].append(start)

    def batched(tensor: torch.Tensor, count: int, length: int) -> torch.Tensor:
        return tensor.reshape(count, length, heads, dim).transpose(1, 2)  # (chunks, heads, length, dim)

    if len(groups) == 1 and sum(lengths) == sequence:  # all chunks equal: a view, no gather
        length, chunk_starts = next(iter(groups.items()))
        count = len(chunk_starts)
        out = F.scaled_dot_product_attention(*(batched(t, count, length) for t in (query, key, value)), scale=scale)
        return out.transpose(1, 2).reshape(sequence, heads, dim)

    outputs, positions = [], []
    for length, chunk_starts in groups.items():
        index = (np.asarray(chunk_starts)[:, None] + np.arange(length)).reshape(-1)
        index_t = torch.from_numpy(index).to(query.device)
        count = len(chunk_starts)
        out = F.scaled_dot_product_attention(
            *(batched(t.index_select(0, index_t), count, length) for t in (query, key, value)), scale=scale
        )
        outputs.append(out.transpose(1, 2).reshape(-1, heads, dim))
        positions.append(index)
    order = torch.from_numpy(np.argsort(np.concatenate(positions))).to(query.device)
    return torch.cat(outputs).index_select(0, order)


def _batched_forward(
    self,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_seqlen: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """Drop-in ``forward`` for a Qwen vision attention module: the same projections, batched chunk attention."""
    if self.config._attn_implementation != "sdpa":
        return type(self).forward(self, hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
    sequence = hidden_states.shape[0]
    query, key, value = self.qkv(hidden_states).reshape(sequence, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    # The family's own rotary function (Qwen2.5-VL and Qwen3-VL each define one in their modeling module).
    rotary = sys.modules[type(self).__module__].apply_rotary_pos_emb_vision
    query, key = rotary(query, key, cos, sin)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()  # one host sync per block, as the per-chunk loop has
    out = chunked_attention(query, key, value, lengths, self.scaling)
    return self.proj(out.reshape(sequence, -1))


def batch_vision_attention(model: torch.nn.Module, model_type: str) -> int:
    """Give every vision attention module of a Qwen2.5-VL / Qwen3-VL ``model`` the batched chunk attention.

    The modules keep their class, weights and state dict; only their bound ``forward`` changes. Other families
    are left alone.

    Returns:
        How many modules were changed (0 for families without chunked vision attention).
    """
    class_name = _ATTENTION_CLASSES.get(model_type)
    if class_name is None:
        return 0
    changed = 0
    for module in model.modules():
        if type(module).__name__ == class_name:
            module.forward = _batched_forward.__get__(module)
            changed += 1
    return changed
