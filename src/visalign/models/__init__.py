"""VLM adapters: every supported family behind one interface (:class:`VLM`), loaded with :func:`load_vlm`."""

from visalign.models.adapter import IGNORE_INDEX, VLM, Generation, ImageEncoding, collate_rows, scored_token_count
from visalign.models.conversation import Conversation, Turn, assistant, pil_to_tensor, tensor_to_pil, user
from visalign.models.families import FAMILIES, Family, ModuleNames
from visalign.models.loading import (
    changed_fingerprint,
    default_model_path,
    detect_family,
    load_vlm,
    model_family,
    resolve_spec,
    weights_fingerprint,
)

__all__ = [
    "FAMILIES",
    "IGNORE_INDEX",
    "VLM",
    "Generation",
    "ImageEncoding",
    "Conversation",
    "Family",
    "ModuleNames",
    "Turn",
    "assistant",
    "collate_rows",
    "default_model_path",
    "detect_family",
    "load_vlm",
    "model_family",
    "pil_to_tensor",
    "resolve_spec",
    "scored_token_count",
    "tensor_to_pil",
    "user",
    "weights_fingerprint",
    "changed_fingerprint",
]
