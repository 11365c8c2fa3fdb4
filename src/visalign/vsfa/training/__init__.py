"""VSFA training: LoRA on a VLM's language model with the vision tower frozen, resumable, one or many GPUs.

``train(config, out)`` runs a job; ``load_adapter`` loads base model + adapter through the models layer;
``merge_adapter`` writes merged full weights; ``load_training_set`` reads LLaVA / ShareGPT / VLGuard data.
"""

from visalign.vsfa.training.artefact import (
    base_mismatch,
    load_adapter,
    merge_adapter,
    read_adapter_metadata,
    save_adapter,
)
from visalign.vsfa.training.batching import BatchPlan
from visalign.vsfa.training.config import VsfaTrainConfig
from visalign.vsfa.training.dataset import Example, TrainingSet, load_training_set
from visalign.vsfa.training.lora import apply_lora, lora_target_pattern
from visalign.vsfa.training.metrics import read_metrics
from visalign.vsfa.training.trainer import TrainResult, oom_advice, train

__all__ = [
    "BatchPlan",
    "Example",
    "TrainResult",
    "TrainingSet",
    "VsfaTrainConfig",
    "apply_lora",
    "base_mismatch",
    "load_adapter",
    "load_training_set",
    "lora_target_pattern",
    "merge_adapter",
    "oom_advice",
    "read_adapter_metadata",
    "read_metrics",
    "save_adapter",
    "train",
]
