"""``torch.compile`` of a VLM's repeated blocks, the unit the training step compiles."""

from __future__ import annotations

from typing import Literal

import torch.nn as nn

from visalign.models import VLM


def compile_blocks(
    vlm: VLM, *, language: bool = True, vision: bool = True, vision_mode: Literal["reduce-overhead"] | None = None
) -> int:
    """Compile each decoder layer of the language model and each block of the vision tower, in place.

    Block by block rather than the whole model: every layer has the same shapes, so one compiled graph serves them
    all, and the model's Python glue (image placement, rotary positions, the labelled-only loss) stays eager.
    Names and state-dict keys are unchanged, so checkpoints and adapters are the same as without compilation.

    Args:
        vlm: the loaded model (after LoRA is applied: the compiled graphs then include the adapters).
        language: compile the language model's decoder layers.
        vision: compile the vision tower's blocks (frozen, so this only speeds up their forward).
        vision_mode: ``reduce-overhead`` replays each vision block as a CUDA graph (GPU only).

    Returns:
        How many blocks were compiled.
    """
    compiled = 0
    names = vlm.family.modules
    for path, chosen, mode in ((names.decoder_layers, language, None), (names.vision_blocks, vision, vision_mode)):
        if not chosen:
            continue
        blocks = vlm.model.get_submodule(path)
        if not isinstance(blocks, nn.ModuleList):
            raise TypeError(f"{path} is a {type(blocks).__name__}, not the model's list of blocks")
        for block in blocks:
            block.compile(mode=mode)
            compiled += 1
    return compiled
