"""The trained adapter as an artefact: peft's files plus a visalign sidecar; loading it back; merging it.

``adapter/`` holds ``adapter_config.json`` and ``adapter_model.safetensors`` (peft ``save_pretrained``, so peft,
transformers and vLLM read it as is) and ``visalign_adapter.json``: base model spec, weights fingerprint and chat
template identity, family, the weights dtype and device type it trained in, data hash, the training config and its
hash, steps and final loss, package versions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from visalign.errors import VisalignError
from visalign.models import VLM, changed_fingerprint, load_vlm
from visalign.models.processors import _IMAGE_ONLY, save_qwen_processor
from visalign.runs import atomic_write_json, package_versions, replace_dir, restore_replaced_dir

SIDECAR = "visalign_adapter.json"
MERGED_SIDECAR = "visalign_merged.json"
FORMAT = "visalign-adapter/1"


def save_adapter(peft_model, target: Path, metadata: dict[str, Any], *, state_dict: dict | None = None) -> Path:
    """Save the LoRA adapter with peft and write the sidecar, atomically (temporary folder, then rename).

    An adapter already at ``target`` stays until the new one is in place (:func:`visalign.runs.replace_dir`): a
    job killed while saving leaves the old adapter or the new one, never none.

    Args:
        peft_model: the ``PeftModel`` returned by :func:`visalign.vsfa.training.lora.apply_lora`.
        target: the adapter folder to create or replace.
        metadata: what the sidecar records (base model, data hash, config, config hash ...).
        state_dict: a gathered full state dict (FSDP / DeepSpeed ZeRO-3), else peft reads the live weights.
    """
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    peft_model.save_pretrained(str(staging), state_dict=state_dict)
    atomic_write_json(staging / SIDECAR, {"format": FORMAT, **metadata, "versions": package_versions()})
    return replace_dir(staging, target)


def read_adapter_metadata(adapter: str | Path) -> dict[str, Any]:
    """The sidecar of an adapter folder.

    Raises:
        VisalignError: the folder is not a visalign adapter.
    """
    path = Path(adapter)
    restore_replaced_dir(path)  # a save killed between its renames left the previous adapter aside
    if not (path / "adapter_config.json").is_file():
        raise VisalignError(f"{path}: not an adapter folder (no adapter_config.json); pass <train out>/adapter")
    sidecar = path / SIDECAR
    if not sidecar.is_file():
        raise VisalignError(f"{path}: no {SIDECAR}; pass the base model explicitly (--base)")
    return json.loads(sidecar.read_text())


def _base_spec(adapter: Path, base: str | None) -> str:
    if base is not None:
        return base
    return read_adapter_metadata(adapter)["base_model"]


def base_mismatch(adapter: str | Path, spec: str) -> str | None:
    """Why the adapter cannot be expected to work on the base model ``spec``, or None when nothing says so.

    Compares the base weights fingerprint recorded at training time with the model's now; adapters saved before
    fingerprints were recorded (or without a sidecar), and hub ids, are not checked.
    """
    adapter = Path(adapter)
    sidecar = adapter / SIDECAR
    recorded = json.loads(sidecar.read_text()).get("base_fingerprint") if sidecar.is_file() else None
    current = changed_fingerprint(recorded, spec)
    if current is None:
        return None
    return (f"{adapter}: trained on base model weights {recorded}, but '{spec}' here has {current}; LoRA weights "
            "do not carry over to other base weights. Use the base model it was trained on, retrain against this "
            "model (the embedded default model built on another machine can differ), or allow the mismatch to "
            "study transfer on purpose (--allow-base-mismatch; allow_model_mismatch in an eval system)")  # fmt: skip


def _checked_base(adapter: Path, base: str | None, allow_base_mismatch: bool) -> str:
    """The base model spec to load the adapter on, refused when its weights are not the ones it was trained on."""
    spec = _base_spec(adapter, base)
    if not allow_base_mismatch and (reason := base_mismatch(adapter, spec)):
        raise VisalignError(reason)
    return spec


def load_adapter(
    adapter: str | Path, *, base: str | None = None, allow_base_mismatch: bool = False, **load_kwargs
) -> VLM:
    """Load the base model named in the adapter's sidecar (or ``base``) with the adapter applied.

    Args:
        adapter: the ``adapter/`` folder written by ``visalign vsfa train``.
        base: a model spec overriding the sidecar's base model (e.g. the same model in another folder).
        allow_base_mismatch: apply the adapter even to base weights other than those it was trained on.
        **load_kwargs: passed to :func:`visalign.models.load_vlm` (``dtype``, ``device`` ...).

    Raises:
        VisalignError: the base model's weights differ from those the adapter was trained on (see
            :func:`base_mismatch`), or the adapter does not load.
    """
    adapter = Path(adapter)
    restore_replaced_dir(adapter)
    return load_vlm(_checked_base(adapter, base, allow_base_mismatch), adapter=adapter, **load_kwargs)


def _save_processor(processor, out: Path) -> None:
    image_only = next((name for name, cls in _IMAGE_ONLY.items() if isinstance(processor, cls)), None)
    if image_only:  # the Qwen fallback processor without a video processor (no torchvision here)
        save_qwen_processor(processor, out, processor_class=image_only)
    else:
        processor.save_pretrained(out)


def _drop_gguf_marker(model) -> None:
    """Forget a GGUF origin: its weights were dequantised to plain floats at load, so they save like any others.

    (The embedded default model keeps the GGUF ``quantization_config`` of SmolLM2 in its config, which makes
    ``save_pretrained`` refuse to write a merged copy.)
    """
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if getattr(method, "value", method) != "gguf":
        return
    model.hf_quantizer = None
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")


def merge_adapter(
    adapter: str | Path, out: str | Path, *, base: str | None = None, dtype: str | None = None,
    allow_base_mismatch: bool = False,
) -> Path:
    """Fold the LoRA weights into the base model and save full weights that :func:`load_vlm` loads.

    Args:
        adapter: the adapter folder.
        out: the folder for the merged checkpoint (replaced if it exists).
        base: base model spec overriding the sidecar's.
        dtype: weights dtype of the merged model (``bfloat16``, ``float32``); default: the base model's default.
        allow_base_mismatch: merge even into base weights other than those the adapter was trained on.

    Returns:
        The merged checkpoint folder.

    Raises:
        VisalignError: the base model's weights differ from those the adapter was trained on (see
            :func:`base_mismatch`), the adapter does not apply, or ``out`` holds something else.
    """
    from peft import PeftModel

    adapter, out = Path(adapter), Path(out)
    if dtype not in (None, "float32", "bfloat16", "float16"):
        raise VisalignError(f"--dtype {dtype}: choose float32, bfloat16 or float16")
    if out.exists() and not (out / MERGED_SIDECAR).is_file() and any(out.iterdir()):
        raise VisalignError(f"{out}: exists and is not an earlier merge output; choose an empty or new folder")
    spec = _checked_base(adapter, base, allow_base_mismatch)
    vlm = load_vlm(spec, dtype=getattr(torch, dtype) if dtype else None, device="cpu")
    try:
        merged = PeftModel.from_pretrained(vlm.model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise VisalignError(f"{adapter}: cannot apply the adapter to {spec} ({str(exc).splitlines()[0]})") from None
    _drop_gguf_marker(merged)
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging)
    _save_processor(vlm.processor, staging)
    sidecar = adapter / SIDECAR
    metadata = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    atomic_write_json(staging / MERGED_SIDECAR, {"merged_from": str(adapter), "base_model": spec, "adapter": metadata})
    return replace_dir(staging, out)
