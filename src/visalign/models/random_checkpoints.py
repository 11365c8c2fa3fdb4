"""Write random-weight checkpoints of every supported family to disk, loadable with ``from_pretrained``.

Two shapes: ``tiny`` (a few hundred thousand parameters, for CPU tests of the plumbing) and ``7b`` (the published
7B/8B shapes, for GPU throughput and memory benchmarks; the Qwen image processors also take the published pixel
bounds, so an image gives as many image tokens as on the released checkpoint). Everything is built locally: the
tokenizer is trained in memory, the chat template is ours in the family's format, and no file is downloaded. Random
weights prove plumbing, not behaviour.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from visalign.errors import VisalignError
from visalign.models.families import FAMILIES as REGISTERED
from visalign.models.processors import _IMAGE_ONLY, save_qwen_processor
from visalign.models.tokenizer_factory import build_bpe_tokenizer

SHAPES = ("tiny", "7b")

_QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]
_LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]


def chat_template(name: str) -> str:
    """Return the Jinja chat template shipped with visalign under ``models/templates/<name>.jinja``."""
    return resources.files("visalign.models").joinpath(f"templates/{name}.jinja").read_text()


def _qwen_tokenizer():
    tok = build_bpe_tokenizer(_QWEN_SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return tok, {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}


def _llava_tokenizer():
    tok = build_bpe_tokenizer(
        _LLAVA_SPECIALS, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    return tok, {t: tok.convert_tokens_to_ids(t) for t in _LLAVA_SPECIALS}


def _qwen2_5_vl(shape: str):
    tok, ids = _qwen_tokenizer()
    if shape == "tiny":
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
        pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    else:  # Qwen2.5-VL-7B-Instruct shapes
        text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                    num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                     "mrope_section": [16, 24, 24]})
        vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31])
        # Qwen2.5-VL-7B-Instruct's preprocessor_config.json: min_pixels 3136, max_pixels 12845056
        pixels = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 16384)
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
        pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]},
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = _IMAGE_ONLY["Qwen2_5_VLProcessor"](image_processor=image_processor, tokenizer=tok,
                                    chat_template=chat_template("qwen2_5_vl"))
    return Qwen2_5_VLForConditionalGeneration, config, processor


def _qwen3_vl(shape: str):
    tok, ids = _qwen_tokenizer()
    if shape == "tiny":
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, vocab_size=len(tok), max_position_embeddings=2048,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                     "mrope_section": [2, 3, 3], "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                      deepstack_visual_indexes=[0])
        pixels = dict(min_pixels=64 * 64, max_pixels=128 * 128)
    else:  # Qwen3-VL-8B-Instruct shapes
        text = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                     "mrope_section": [24, 20, 20], "mrope_interleaved": True})
        vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                      deepstack_visual_indexes=[8, 16, 24])
        # Qwen3-VL-8B-Instruct's preprocessor_config.json: size shortest_edge 65536, longest_edge 16777216
        pixels = dict(min_pixels=256 * 256, max_pixels=4096 * 4096)
    config = Qwen3VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )
    config.text_config.pad_token_id = ids["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = _IMAGE_ONLY["Qwen3VLProcessor"](image_processor=image_processor, tokenizer=tok,
                                 chat_template=chat_template("qwen3_vl"))
    return Qwen3VLForConditionalGeneration, config, processor


def _clip_vision(shape: str, image_size: int) -> dict:
    if shape == "tiny":
        return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=image_size, patch_size=8, projection_dim=32)
    # CLIP ViT-L/14 at 336 px, the LLaVA-1.5 / LLaVA-NeXT tower
    return dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=image_size, patch_size=14, projection_dim=768)


def _clip_processor_kwargs(image_size: int) -> dict:
    return dict(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])


def _llava(shape: str):
    tok, ids = _llava_tokenizer()
    image_size = 32 if shape == "tiny" else 336
    if shape == "tiny":
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, vocab_size=len(tok), max_position_embeddings=2048)
    else:  # Llama-2-7B / Vicuna-7B shapes
        text = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_clip_vision(shape, image_size)),
        text_config=LlamaConfig(**text, pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"],
                                eos_token_id=ids["</s>"]),
        image_token_id=ids["<image>"], vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    patch = config.vision_config.patch_size
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(**_clip_processor_kwargs(image_size)), tokenizer=tok,
        patch_size=patch, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=chat_template("llava"),
    )
    return LlavaForConditionalGeneration, config, processor


def _llava_next(shape: str):
    tok, ids = _llava_tokenizer()
    image_size = 32 if shape == "tiny" else 336
    if shape == "tiny":
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048)
    else:  # Mistral-7B shapes
        text = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=32064, max_position_embeddings=32768)
    s = image_size
    pinpoints = [[s, 2 * s], [2 * s, s], [2 * s, 2 * s], [3 * s, s], [s, 3 * s]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_clip_vision(shape, image_size)),
        text_config=MistralConfig(**text, pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"],
                                  eos_token_id=ids["</s>"]),
        image_token_id=ids["<image>"], vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_grid_pinpoints=pinpoints,
    )
    image_processor = LlavaNextImageProcessorPil(**_clip_processor_kwargs(image_size),
                                                 image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=chat_template("llava_next"),
    )
    return LlavaNextForConditionalGeneration, config, processor


#: One builder per family of :data:`visalign.models.FAMILIES` (a test checks that every registered family has one):
#: ``builder(shape) -> (model class, config, processor)``.
_BUILDERS = {"qwen2_5_vl": _qwen2_5_vl, "qwen3_vl": _qwen3_vl, "llava": _llava, "llava_next": _llava_next}
#: The families a random checkpoint can be written for, by ``model_type``.
FAMILIES = tuple(_BUILDERS)


def build_parts(
    family: str, shape: str = "tiny"
) -> tuple[type[PreTrainedModel], PretrainedConfig, ProcessorMixin]:
    """The model class, config and processor of a random ``family`` checkpoint of ``shape``; no weights are drawn.

    Raises:
        VisalignError: an unknown family or shape; a family registered in :data:`visalign.models.FAMILIES` without a
            builder here is named as such.
    """
    if family not in _BUILDERS:
        if family in REGISTERED:
            raise VisalignError(f"model family '{family}' is registered but has no random-checkpoint builder; add one "
                                "to visalign.models.random_checkpoints._BUILDERS")
        raise VisalignError(f"unknown model family '{family}'; choose one of {', '.join(FAMILIES)}")
    if shape not in SHAPES:
        raise VisalignError(f"unknown checkpoint shape '{shape}'; choose one of {', '.join(SHAPES)}")
    return _BUILDERS[family](shape)


def write_random_checkpoint(family: str, path: str | Path, *, shape: str = "tiny", seed: int = 0,
                            dtype: torch.dtype = torch.float32, device: str | None = None) -> Path:
    """Create a random-weight checkpoint of ``family`` at ``path`` (config, safetensors, tokenizer, processor).

    Args:
        family: one of :data:`FAMILIES`.
        path: output folder; created if missing.
        shape: ``tiny`` for CPU tests or ``7b`` for the published 7B/8B shapes.
        seed: seed for the random weights, so two calls give identical checkpoints.
        dtype: storage dtype of the weights (use bfloat16 for the 7B shapes).
        device: where the weights are initialised; ``cuda`` draws a 7B model in seconds where a CPU takes
            minutes. The same seed gives different numbers on different devices.
    """
    model_cls, config, processor = build_parts(family, shape)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device or "cpu"):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    qwen_class = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}.get(family)
    if qwen_class:
        save_qwen_processor(processor, path, processor_class=qwen_class)
    else:
        processor.save_pretrained(path)
    return path
