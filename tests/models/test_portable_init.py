"""Portable random initialisation: NumPy's own sampler agrees, statistics are right, streams are independent."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from visalign.models.portable_init import portable_init_, portable_uniform_, portable_unit_uniform


def _numpy_reference(count: int, seed: int, name: str) -> np.ndarray:
    """NumPy's Generator.random on the same PCG64 stream: an implementation independent of ours."""
    name_key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, name_key]))).random(count)


def test_unit_uniform_matches_numpy_generator_bit_for_bit():
    ours = portable_unit_uniform((4, 250), seed=3, name="layer.weight")
    reference = _numpy_reference(1000, 3, "layer.weight").astype(np.float32).reshape(4, 250)
    assert ours.dtype == torch.float32
    assert np.array_equal(ours.numpy(), reference)


def test_streams_depend_on_seed_and_name_only():
    first = portable_unit_uniform((64,), seed=0, name="a")
    assert torch.equal(first, portable_unit_uniform((64,), seed=0, name="a"))
    assert not torch.equal(first, portable_unit_uniform((64,), seed=0, name="b"))
    assert not torch.equal(first, portable_unit_uniform((64,), seed=1, name="a"))
    # a longer draw from the same stream starts with the same numbers
    assert torch.equal(first, portable_unit_uniform((128,), seed=0, name="a")[:64])


@pytest.mark.parametrize("std", [0.02, 1.0])
def test_uniform_has_the_requested_moments_and_bounds(std):
    values = portable_uniform_(torch.empty(200_000), std, seed=0, name="x")
    assert abs(values.mean().item()) < 0.01 * std
    assert values.std().item() == pytest.approx(std, rel=0.01)
    assert values.abs().max().item() <= std * math.sqrt(3.0)


def test_init_sets_biases_norms_and_lecun_scaled_weights():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(400, 300), torch.nn.LayerNorm(300), torch.nn.Conv2d(3, 50, 14))
    portable_init_(module, seed=0)
    assert torch.count_nonzero(module[0].bias) == 0 and torch.count_nonzero(module[2].bias) == 0
    assert torch.equal(module[1].weight, torch.ones(300)) and torch.count_nonzero(module[1].bias) == 0
    assert module[0].weight.std().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)
    assert module[2].weight.std().item() == pytest.approx(1 / math.sqrt(3 * 14 * 14), rel=0.02)


def test_init_ignores_torch_seed_and_parameter_order():
    torch.manual_seed(1)
    alone = torch.nn.ModuleDict({"proj": torch.nn.Linear(8, 8)})
    torch.manual_seed(2)
    with_more = torch.nn.ModuleDict({"extra": torch.nn.Linear(8, 4), "proj": torch.nn.Linear(8, 8)})
    portable_init_(alone, seed=0, prefix="tower.")
    portable_init_(with_more, seed=0, prefix="tower.")
    assert torch.equal(alone["proj"].weight, with_more["proj"].weight)
    assert not torch.equal(with_more["extra"].weight[:4], with_more["proj"].weight[:4])
