"""Random initialisation that gives the same bits on every machine, torch version and CPU instruction set.

torch's ``normal_`` on the CPU takes a vectorised path whose transcendental functions round differently under
AVX2, AVX-512 and the scalar fallback, and its init helpers change between releases. A model built from
``torch.manual_seed`` alone is therefore a different model on a different machine, and an image optimised
against one does not work on the other. Here every number comes from NumPy's PCG64 bit stream (its raw output is
fixed by the algorithm) and is turned into a float with exact or correctly rounded IEEE operations only.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch


def _unit_float64(count: int, *, seed: int, name: str) -> np.ndarray:
    """``count`` float64 numbers uniform on [0, 1) from the stream keyed by ``seed`` and ``name``."""
    name_key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    raw = np.random.PCG64(np.random.SeedSequence([seed, name_key])).random_raw(count)
    # the top 53 bits scaled by 2**-53: an exact conversion, as NumPy's own float64 sampler does
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def portable_unit_uniform(shape: tuple[int, ...], *, seed: int, name: str) -> torch.Tensor:
    """Float32 tensor of ``shape`` uniform on [0, 1), identical on every platform for the same seed and name.

    Each ``name`` draws from its own stream, so adding or reordering tensors never shifts another's numbers.
    """
    unit = _unit_float64(math.prod(shape), seed=seed, name=name)
    return torch.from_numpy(unit.astype(np.float32)).reshape(shape)


def portable_uniform_(tensor: torch.Tensor, std: float, *, seed: int, name: str) -> torch.Tensor:
    """Fill ``tensor`` in place with zero-mean uniform noise of standard deviation ``std``; returns it."""
    unit = _unit_float64(tensor.numel(), seed=seed, name=name)
    # exact doubling and subtraction, then one correctly rounded product: the same bits on every platform
    values = (unit * 2.0 - 1.0) * (std * math.sqrt(3.0))
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(values.astype(np.float32)).reshape(tensor.shape).to(tensor.dtype))
    return tensor


def portable_init_(module: torch.nn.Module, *, seed: int, prefix: str = "") -> None:
    """Re-initialise every parameter of ``module`` portably: LeCun-scaled uniform weights, unit norms, zero biases.

    Matrices, convolution kernels, embeddings and probes get uniform noise with variance ``1 / fan_in`` (fan-in =
    the product of all but the first dimension); one-dimensional weights (norm scales) become 1 and biases 0.
    ``prefix`` is prepended to each parameter's name to key its stream.
    """
    for name, parameter in module.named_parameters():
        with torch.no_grad():
            if name.endswith("bias"):
                parameter.zero_()
            elif parameter.dim() == 1:
                parameter.fill_(1.0)
            else:
                fan_in = math.prod(parameter.shape[1:])
                portable_uniform_(parameter, 1.0 / math.sqrt(fan_in), seed=seed, name=prefix + name)
