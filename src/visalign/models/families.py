"""What visalign knows about each supported VLM family: how to recognise it and where its parts live."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModuleNames:
    """Dotted module paths inside the loaded model, for freezing and for LoRA targets."""

    vision_tower: str
    projector: str
    language_model: str
    #: the vision tower's repeated transformer blocks (an ``nn.ModuleList``), compiled one by one
    vision_blocks: str
    lm_head: str = "lm_head"
    #: further projector parts outside ``projector`` (Qwen3-VL's deepstack mergers), frozen or trained with it
    extra_projectors: tuple[str, ...] = ()

    @property
    def decoder_layers(self) -> str:
        """The language model's decoder layers (an ``nn.ModuleList``)."""
        return f"{self.language_model}.layers"

    @property
    def projectors(self) -> tuple[str, ...]:
        """Every projector part: ``projector`` followed by ``extra_projectors``."""
        return (self.projector, *self.extra_projectors)


@dataclass(frozen=True)
class Family:
    """A supported model family."""

    name: str
    model_type: str
    example: str
    modules: ModuleNames
    multi_image: bool


FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        Family("Qwen2.5-VL", "qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct",
               ModuleNames("model.visual", "model.visual.merger", "model.language_model", "model.visual.blocks"),
               multi_image=True),
        Family("Qwen3-VL", "qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct",
               ModuleNames("model.visual", "model.visual.merger", "model.language_model", "model.visual.blocks",
                           extra_projectors=("model.visual.deepstack_merger_list",)), multi_image=True),
        Family("LLaVA-1.5", "llava", "llava-hf/llava-1.5-7b-hf",
               ModuleNames("model.vision_tower", "model.multi_modal_projector", "model.language_model",
                           "model.vision_tower.encoder.layers"),
               multi_image=False),
        Family("LLaVA-NeXT", "llava_next", "llava-hf/llava-v1.6-mistral-7b-hf",
               ModuleNames("model.vision_tower", "model.multi_modal_projector", "model.language_model",
                           "model.vision_tower.encoder.layers"),
               multi_image=False),
    )
}
