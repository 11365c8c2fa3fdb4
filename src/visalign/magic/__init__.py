"""Magic Image: parameter-free safety alignment by optimising one image prompt per value system."""

from visalign.magic.apply import answer_with_magic_image, refusal_rates, with_magic_image
from visalign.magic.artifact import MagicImage, find_magic_image, load_magic_image, model_mismatch, save_magic_image
from visalign.magic.config import MagicConfig
from visalign.magic.data import Example, TrainingSet, fill_benign_targets, load_training_set
from visalign.magic.objective import dual_loss, quantize_straight_through
from visalign.magic.optimize import MagicResult, optimize_magic_images, weights_digest
from visalign.magic.placement import attach, compose_canvas, letterbox, resolve_placement
from visalign.magic.value_systems import ValueSystem, get_value_system, load_value_systems

__all__ = [
    "Example",
    "MagicConfig",
    "MagicImage",
    "MagicResult",
    "TrainingSet",
    "ValueSystem",
    "answer_with_magic_image",
    "attach",
    "compose_canvas",
    "dual_loss",
    "fill_benign_targets",
    "find_magic_image",
    "get_value_system",
    "letterbox",
    "load_magic_image",
    "load_training_set",
    "load_value_systems",
    "model_mismatch",
    "optimize_magic_images",
    "quantize_straight_through",
    "refusal_rates",
    "resolve_placement",
    "save_magic_image",
    "weights_digest",
    "with_magic_image",
]
