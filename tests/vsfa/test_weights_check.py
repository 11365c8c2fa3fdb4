"""The finite-weights check after each optimiser step: foreach norms, and weights too large for a float32 norm."""

from __future__ import annotations

import pytest
import torch
import yaml
from accelerate import Accelerator
from cli_in_process import run_in_process as run_cli
from train_support import one_thread, train_config, write_dataset

from visalign.vsfa.training.trainer import _weights_finite


def _optimizer(*tensors: torch.Tensor) -> torch.optim.Optimizer:
    """A real AdamW over ``tensors`` (what the trainer passes), as parameters."""
    return torch.optim.AdamW([torch.nn.Parameter(t) for t in tensors], lr=1e-3)


def _seeded(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape))) * 0.02).to(dtype)


@pytest.mark.parametrize(("bad", "expected"), [(None, True), (float("inf"), False), (float("-inf"), False),
                                               (float("nan"), False), (1.0e30, False), (3.0e38, False)])  # fmt: skip
def test_one_bad_value_among_lora_shaped_tensors_fails_the_check(bad, expected):
    accelerator = Accelerator(cpu=True)
    tensors = [_seeded(16, 96), _seeded(96, 16), _seeded(16, 512), _seeded(512, 16), torch.empty(0)]
    if bad is not None:
        # one value of the fourth tensor; 1e30 and 3e38 are finite, but their float32 square is not: weights that
        # large overflow the next forward (before: the check passed them, and the adapter was saved with them)
        tensors[3][100, 5] = bad
    assert _weights_finite(_optimizer(*tensors), accelerator) is expected


def test_half_precision_weights_whose_half_norm_would_overflow_pass():
    """The norms of float16/bfloat16 weights are taken in float32: float16's norm overflows at 65504."""
    accelerator = Accelerator(cpu=True)
    large = torch.full((100_000,), 300.0, dtype=torch.float16)  # norm 94,868 > 65,504, every value finite
    assert not torch.isfinite(torch.linalg.vector_norm(large))
    mixed = [large, _seeded(64, 16, dtype=torch.bfloat16), _seeded(16, 64)]  # three dtype groups
    assert _weights_finite(_optimizer(*mixed), accelerator) is True
    mixed[1][3, 3] = float("nan")  # the bfloat16 group alone
    assert _weights_finite(_optimizer(*mixed), accelerator) is False


def test_a_huge_lr_that_leaves_finite_weights_near_1e30_stops_before_the_adapter_is_saved(tiny_checkpoints, tmp_path,
                                                                                        capsys):  # fmt: skip
    one_thread()
    data = write_dataset(tmp_path / "data", "llava", count=2)
    # one step; the non-fused AdamW raises nothing at lr 1e30 (its step size, 1e31, fits float32) and moves every
    # LoRA B value by about 1e31: finite weights whose norm overflows. Before: exit 0 and an adapter of them.
    config = train_config(tiny_checkpoints["llava"], data, epochs=1,
                          optim={"lr": 1.0e30, "max_grad_norm": None, "fused": False})  # fmt: skip
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    code, _, err = run_cli(["vsfa", "train", "--config", str(path), "--out", str(run)], capsys)
    assert (code, "Traceback" in err) == (2, False), err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "error: non-finite weights after the AdamW update (its step overflowed the weights' dtype) at step 1; "
        "training stopped, no checkpoint was written yet; lower optim.lr (now 1e+30), and train into a new --out "
        "directory"
    )
    assert not (run / "adapter").exists() and not (run / "checkpoints").exists()
