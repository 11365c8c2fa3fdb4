"""FSDP shards the trainer's wrapped model one decoder layer (and vision block) at a time, as the config promises.

FSDP itself needs GPUs; accelerate's own wrap policy does not, so the units it would shard are checked here.
"""

from __future__ import annotations

import pytest
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

from visalign.models import FAMILIES, load_vlm
from visalign.vsfa.training.config import LoraConfig
from visalign.vsfa.training.lora import apply_lora
from visalign.vsfa.training.trainer import LabelledLoss


@pytest.mark.parametrize("family", sorted(FAMILIES))  # every registered family, a new one included
def test_fsdp_wraps_every_decoder_layer_of_the_trained_model(tiny_checkpoints, family):
    vlm = load_vlm(str(tiny_checkpoints[family]))
    apply_lora(vlm, LoraConfig(rank=4, alpha=8))
    # what configs/accelerate/fsdp.yaml asks for: FSDP2, TRANSFORMER_BASED_WRAP, no class list
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    wrapped = LabelledLoss(vlm)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, wrapped)
    units = [module for module in wrapped.modules() if policy(module)]
    decoder_layers = list(vlm.model.get_submodule(vlm.family.modules.language_model).layers)
    assert decoder_layers and all(any(layer is unit for unit in units) for layer in decoder_layers)
    assert {type(unit).__name__ for unit in units} <= set(vlm.model._no_split_modules)
