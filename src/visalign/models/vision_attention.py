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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# transformers class name of each family's vision attention module.
_ATTENTION_CLASSES = {"qwen2_5_vl": "Qwen2_5_VLVisionAttention", "qwen3_vl": "Qwen3VLVisionAttention"}


@dataclass(frozen=True)
class ChunkPlan:
    """How to batch the chunks of one ``cu_seqlens``: equal-length groups and where their tokens sit.

    Attributes:
        groups: (chunk length, chunk count, token positions of the group in order, or None when the whole
            sequence is one equal-length group and needs no gather).
        order: the permutation that puts the groups' concatenated outputs back in sequence order (None when
            there is no gather).
    """

    groups: tuple[tuple[int, int, torch.Tensor | None], ...]
    order: torch.Tensor | None

    @classmethod
    def from_lengths(cls, lengths: list[int], device: torch.device | str) -> ChunkPlan:
        """Group consecutive chunks of the given lengths by length (empty chunks are dropped)."""
        starts = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
        by_length: dict[int, list[int]] = defaultdict(list)
        for start, length in zip(starts.tolist(), lengths, strict=True):
            if length:
                by_length[length].append(start)
        if len(by_length) == 1:  # all chunks equal (empty ones hold no tokens): a view, no gather
            (length, chunk_starts), = by_length.items()
            return cls(groups=((length, len(chunk_starts), None),), order=None)
        groups, positions = [], []
        for length, chunk_starts in by_length.items():
            index = (np.asarray(chunk_starts)[:, None] + np.arange(length)).reshape(-1)
            groups.append((length, len(chunk_starts), torch.from_numpy(index).to(device)))
            positions.append(index)
        order = torch.from_numpy(np.argsort(np.concatenate(positions))).to(device)
        return cls(groups=tuple(groups), order=order)


def chunked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: list[int] | ChunkPlan, scale: float
) -> torch.Tensor:
    """Bidirectional attention within consecutive chunks of a packed sequence, one call per distinct length.

    Args:
        query: (sequence, heads, head dim), the chunks laid end to end.
        key: like ``query``.
        value: like ``query``.
        lengths: the chunks' lengths in order (they sum to the sequence length), or their :class:`ChunkPlan`.
        scale: the softmax scale.

    Returns:
        (sequence, heads, head dim): each chunk's attention output in place.
    """
    sequence, heads, dim = query.shape
    plan = lengths if isinstance(lengths, ChunkPlan) else ChunkPlan.from_lengths(lengths, query.device)

    def batched(tensor: torch.Tensor, count: int, length: int) -> torch.Tensor:
        return tensor.reshape(count, length, heads, dim).transpose(1, 2)  # (chunks, heads, length, dim)

    outputs = []
    for length, count, index in plan.groups:
        parts = (query, key, value) if index is None else (t.index_select(0, index) for t in (query, key, value))
        out = F.scaled_dot_product_attention(*(batched(t, count, length) for t in parts), scale=scale)
        outputs.append(out.transpose(1, 2).reshape(-1, heads, dim))
    if plan.order is None:
        return outputs[0]
    return torch.cat(outputs).index_select(0, plan.order)


def _plan_for(cu_seqlens: torch.Tensor) -> ChunkPlan:
    """The plan of ``cu_seqlens``, made once per tensor.

    The tower hands the same tensor to every block of a kind (windowed or full), so one host sync per forward and
    kind replaces one per block.
    """
    plan = getattr(cu_seqlens, "_visalign_chunk_plan", None)
    if plan is None:
        plan = ChunkPlan.from_lengths((cu_seqlens[1:] - cu_seqlens[:-1]).tolist(), cu_seqlens.device)
        cu_seqlens._visalign_chunk_plan = plan  # lives and dies with the tensor
    return plan


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
    out = chunked_attention(query, key, value, _plan_for(cu_seqlens), self.scaling)
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
