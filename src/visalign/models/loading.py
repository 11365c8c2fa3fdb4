"""Resolving a model spec (``default``, a local path or a hub id) and loading it as a :class:`VLM`."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText

from visalign.devices import require_device, torch_dtype
from visalign.errors import VisalignError
from visalign.models.adapter import VLM, InputRules
from visalign.models.families import FAMILIES, Family
from visalign.models.processors import load_processor
from visalign.models.vision_attention import batch_vision_attention
from visalign.paths import visalign_home
from visalign.runs import atomic_write_json, sha256_file

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-vlm"
# Each weight file's sha256, keyed by its path, size and modification time: a 15 GB checkpoint is read once.
_FILE_HASH_CACHE = "weight_file_hashes.json"


def default_model_path() -> Path:
    """Folder of the embedded default model (built by ``visalign models build-default``)."""
    return visalign_home() / "models" / DEFAULT_MODEL_NAME


def resolve_spec(spec: str) -> str:
    """Turn ``default`` into the default model's folder and check that a local folder looks like a checkpoint.

    Anything that is not an existing path is treated as a hub id.
    """
    if spec == "default":
        path = default_model_path()
        if not (path / "config.json").is_file():
            raise VisalignError(
                f"the default model is not built yet ({path}); run `visalign models build-default` first"
            )
        return str(path)
    path = Path(spec).expanduser()
    if path.exists():
        _check_checkpoint_folder(path)
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise VisalignError(f"{spec}: no such model folder, and not a hub id of the form owner/name")
    return spec


def _check_checkpoint_folder(path: Path) -> None:
    if not path.is_dir():
        raise VisalignError(f"{path}: a model spec must be a checkpoint folder, not a file")
    if not (path / "config.json").is_file():
        raise VisalignError(f"{path}: missing config.json; not a Hugging Face checkpoint folder")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = _indexed_shards(index)
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise VisalignError(f"{path}: partial checkpoint, missing weight shard(s) {', '.join(missing)}")
    elif not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise VisalignError(f"{path}: no weight files (*.safetensors); the checkpoint is incomplete")


def _indexed_shards(index: Path) -> set[str]:
    """The weight files a sharded checkpoint's index names; one line when the index is cut short or malformed."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = set(weight_map.values())
        if not all(isinstance(shard, str) for shard in shards):
            raise TypeError("a shard name is not a string")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        reason = f"no {exc} key" if isinstance(exc, KeyError) else (str(exc).splitlines() or [type(exc).__name__])[0]
        raise VisalignError(
            f"{index}: unreadable shard index ({reason}); the download was interrupted or the file is damaged: "
            "re-download the checkpoint"
        ) from None
    return shards


def detect_family(config) -> Family:
    """Return the :class:`Family` of a loaded ``config``, or raise for an unsupported architecture."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        supported = ", ".join(sorted(FAMILIES))
        raise VisalignError(f"unsupported model family '{config.model_type}'; supported: {supported}")
    return family


def _places_on_cpu(device: str | None, device_map: str | dict | None) -> bool:
    """Whether the weights end up on the CPU, which decides the default dtype.

    By the device's type (accelerate names a data-parallel CPU process's device "cpu:0"), else by a device map that
    names one device or maps every module, else by CUDA's absence.
    """
    if device is not None:
        return torch.device(device).type == "cpu"
    if isinstance(device_map, dict) and device_map:
        return all(str(place) in ("cpu", "disk") for place in device_map.values())
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        return torch.device(device_map).type == "cpu"
    return not torch.cuda.is_available()


def load_vlm(
    spec: str = "default",
    *,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    adapter: str | Path | None = None,
    batched_vision_attention: bool = True,
) -> VLM:
    """Load a model spec as a :class:`VLM`.

    Args:
        spec: ``default`` (the embedded model), a local checkpoint folder or a hub id.
        dtype: weights dtype (``torch.bfloat16``, ``"float32"``...); float32 on CPU when unset, bfloat16 on GPU.
        device: device to move the model to (``cpu``, ``cuda``, ``cuda:1``); ignored when ``device_map`` is given.
        device_map: passed to ``from_pretrained`` for multi-GPU placement.
        attn_implementation: ``sdpa``, ``eager``, ``flash_attention_2``...
        adapter: a peft LoRA adapter folder (``adapter_config.json``) to apply on top of the weights, e.g. the
            ``adapter/`` folder of ``visalign vsfa train``.
        batched_vision_attention: run the Qwen vision towers' per-window attention as one batched call per
            window size (:mod:`visalign.models.vision_attention`); same outputs up to rounding, far fewer kernel
            launches. ``False`` keeps transformers' per-window loop (for comparison).

    Raises:
        VisalignError: a dtype name that names no weights dtype, a device this machine lacks (``cuda`` without
            CUDA), a checkpoint that cannot be read, or one that lacks weights the model has (see
            :func:`_check_loaded_keys`), an adapter that cannot be read or does not fit the model (see
            :func:`_check_adapter_keys`); one line each.
    """
    dtype = torch_dtype(dtype)  # a mistyped name or an absent GPU is one line, before anything is read
    if device is not None and device_map is None:
        require_device(device)
    source = resolve_spec(spec)
    config = _read_config(spec, source)
    family = detect_family(config)
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.float32 if _places_on_cpu(device, device_map) else torch.bfloat16
    try:
        model, loading_info = AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype, device_map=device_map, attn_implementation=attn_implementation,
            output_loading_info=True,
        )
        processor = load_processor(source)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # SafetensorError: a truncated file
        raise VisalignError(f"{spec}: cannot load the checkpoint ({str(exc).splitlines()[0]})") from None
    _check_loaded_keys(spec, model, loading_info)
    if batched_vision_attention:
        batch_vision_attention(model, config.model_type)
    if adapter is not None:
        _apply_adapter(model, Path(adapter))
    if device_map is None:
        model.to(device)
    model.eval()
    return VLM(model=model, processor=processor, family=family, spec=spec)


def _key_list(keys: list[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: a few names of a long list, for a one-line message."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _check_loaded_keys(spec: str, model: torch.nn.Module, loading_info: dict) -> None:
    """Refuse a load that drew some weights at random; warn of checkpoint weights the model did not take.

    ``loading_info`` is ``from_pretrained``'s ``output_loading_info``. transformers initialises a weight the checkpoint
    lacks at random and only logs it, so two loads of one checkpoint would answer differently under one weights
    fingerprint (a new family whose class names its weights otherwise than the checkpoint, a checkpoint saved
    from a part of a model). transformers has already dropped from ``missing_keys`` the tied weights it filled from
    their source (a tied ``lm_head``) and the keys the model class declares optional; buffers are left out here
    (computed at init, such as rotary frequencies), so what remains are real weights with nothing to load.

    Raises:
        VisalignError: a weight is missing; the message names the checkpoint, a few of the keys and what to do.
    """
    buffers = {name for name, _ in model.named_buffers()}
    missing = sorted(key for key in loading_info.get("missing_keys", ()) if key not in buffers)
    if missing:
        raise VisalignError(
            f"{spec}: the checkpoint lacks {len(missing)} weight(s) that {type(model).__name__} has "
            f"({_key_list(missing)}), which would load as random numbers, different on every load; use a "
            "checkpoint saved whole by save_pretrained for this model class (a new family's class must name its "
            "weights as the checkpoint does)"
        )
    unexpected = sorted(loading_info.get("unexpected_keys", ()))
    if unexpected:
        logger.warning("%s: the checkpoint has %d weight(s) that %s does not use (%s); they were ignored: check that "
                       "its config's architecture matches the weights", spec, len(unexpected),
                       type(model).__name__, _key_list(unexpected))


def model_family(spec: str) -> Family:
    """The family of the model ``spec`` names, reading only its config (a hub id's from the hub or its cache).

    Raises a one-line :class:`VisalignError` when the spec names no readable checkpoint of a supported family: a
    job calls this before it writes its manifest, so a mistyped model leaves no run folder behind.
    """
    return detect_family(_read_config(spec, resolve_spec(spec)))


def input_rules(spec: str) -> InputRules:
    """What the model ``spec`` names accepts as input, from its config and processor only (no weights are read).

    Lets a job check its data against the model's processor before a 7B load (see :class:`InputRules`).

    Raises:
        VisalignError: as :func:`model_family`, or the processor cannot be loaded.
    """
    source = resolve_spec(spec)
    family = detect_family(_read_config(spec, source))
    try:
        processor = load_processor(source)
    except (OSError, ValueError) as exc:
        raise VisalignError(f"{spec}: cannot load the processor ({str(exc).splitlines()[0]})") from None
    return InputRules(processor, family)


def _read_config(spec: str, source: str):
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        if not Path(source).exists():  # a hub id, or a mistyped folder shaped like one (``models/qwen7b``)
            raise VisalignError(f"{spec}: no such model folder, and no hub model of that name could be read "
                                f"({reason})") from None  # fmt: skip
        raise VisalignError(f"{spec}: cannot read the model config ({reason})") from None


def _apply_adapter(model, adapter: Path) -> None:
    """Inject a saved peft adapter into ``model`` in place (the model object and its forward stay the same).

    Raises:
        VisalignError: the folder is no adapter, cannot be read, or does not fit the model (see
            :func:`_check_adapter_keys`); one line each, naming the folder.
    """
    from peft import PeftConfig

    if not (adapter / "adapter_config.json").is_file():
        raise VisalignError(f"{adapter}: not an adapter folder (no adapter_config.json)")
    if not any((adapter / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        # peft would go looking for the folder on the hub and report a repo-id format error instead
        raise VisalignError(f"{adapter}: adapter weights missing (no adapter_model.safetensors); copy the whole folder")
    try:
        config = PeftConfig.from_pretrained(str(adapter))
        # from_pretrained builds the class it is called on only for a config without a task type; the wrapper is
        # dropped anyway (the layers are injected into ``model``), so the task type changes nothing that is kept
        config.task_type = None
        loaded = _reporting_peft_model().from_pretrained(model, str(adapter), is_trainable=False, config=config)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:
        raise VisalignError(f"{adapter}: cannot apply the adapter ({str(exc).splitlines()[0]})") from None
    _check_adapter_keys(adapter, config, loaded.load_report)


@functools.cache
def _reporting_peft_model() -> type:
    """``PeftModel`` keeping what its ``load_adapter`` reports, which ``from_pretrained`` only warns of or drops.

    peft imports in seconds, so it is imported here, when an adapter is applied, not with this module.
    """
    from peft import PeftModel

    class ReportingPeftModel(PeftModel):
        load_report = None

        def load_adapter(self, *args, **kwargs):
            # peft's missing_keys are already this adapter's own (LoRA) weights; unexpected_keys are the file's
            self.load_report = super().load_adapter(*args, **kwargs)
            return self.load_report

    return ReportingPeftModel


def _check_adapter_keys(adapter: Path, config: Any, report: Any) -> None:
    """Refuse an adapter whose files do not fill the LoRA weights peft put into the model, or name other modules.

    A LoRA weight the files lack keeps its initial value (B = 0: the layer acts as the base; A alone: a random
    change), and a tensor that names no module of the model is dropped; peft only warns of the first and says
    nothing of the second, so an adapter with a tensor lost in a copy, trained on another family or with other
    target modules would load and answer as (almost) the base model under the adapter's name. ``config`` is the
    adapter's ``PeftConfig``, ``report`` what peft's ``load_adapter`` returns (``missing_keys``: only LoRA weights,
    so a fully trained projector copy the files lack is not seen here; ``unexpected_keys``).

    Raises:
        VisalignError: one line naming the folder, how many tensors are missing or unexpected (a few of each) and
            what to do.
    """
    def shown(keys) -> str:  # the names as in the adapter file: no peft prefix, no adapter name
        return _key_list(sorted(k.removeprefix("base_model.model.").replace(".default.", ".") for k in keys))

    missing, unexpected = list(report.missing_keys), list(report.unexpected_keys)
    if not missing and not unexpected:
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} LoRA weight(s) the model takes are missing from the files ({shown(missing)})"
                        " and would keep their initial values")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) in the files name no module of this model "
                        f"({shown(unexpected)}) and would be dropped")
    trained_on = getattr(config, "base_model_name_or_path", None)
    raise VisalignError(
        f"{adapter}: the adapter does not fit this model: {'; '.join(problems)}; apply it to the model it was "
        f"trained on{f' ({trained_on})' if trained_on else ''} and copy its adapter_model.safetensors whole"
    )


def weights_fingerprint(spec: str) -> str | None:
    """A short fingerprint of a local checkpoint's weight files, independent of the dtype it is loaded in.

    Two builds of "the same" random model on different machines can differ (the default model's builder version 2
    built one model on the lent H100 and another on the development machine; version 3 is portable), and a Magic
    Image optimised against one does nothing on the other; comparing fingerprints catches that. Every byte of
    every weight file counts, so two fine-tunes of one base that differ in one layer differ here. Each file's
    sha256 is kept in ``$VISALIGN_HOME/weight_file_hashes.json`` under its path, size and modification time: the
    default model takes about a second, a 7B checkpoint about a minute, once.

    Returns:
        16 hex digits, or None for a hub id (no local files to read).
    """
    folder = Path(resolve_spec(spec))
    if not folder.is_dir():
        return None
    return _files_fingerprint(_weight_files_state(folder))


def _weight_files_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Each weight file's path, size and modification time: the cache key of what is computed from the files."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def changed_fingerprint(recorded: str | None, spec: str) -> str | None:
    """The weights fingerprint of ``spec`` now, when it differs from ``recorded``; else None.

    None also when nothing can be compared: no fingerprint was recorded (an artefact from before they were), or
    ``spec`` is a hub id.
    """
    if not recorded:
        return None
    current = weights_fingerprint(spec)
    return None if current is None or current == recorded else current


def weights_digest(model: torch.nn.Module, dtype: torch.dtype | None = None) -> str:
    """SHA-256 over the name, shape, dtype and bytes of every parameter and buffer of ``model``, as loaded.

    The Magic Image job records it before and after optimising (``weights_sha256`` in the sidecar: the weights must
    not move). It depends on the dtype the weights were loaded in: ``dtype`` hashes the floating-point parameters
    cast to it, which is what loading the checkpoint in that dtype gives (buffers stay as loaded: transformers
    computes rotary frequencies in float32 in any dtype).
    """
    digest = hashlib.sha256()
    # cast one tensor at a time, so no second copy of the weights is held
    parameters = ((name, p if dtype is None or not p.is_floating_point() else p.to(dtype))
                  for name, p in model.named_parameters())  # fmt: skip
    for name, tensor in itertools.chain(parameters, model.named_buffers()):
        data = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def matches_weights_digest(spec: str, recorded: str) -> bool | None:
    """Whether the local model ``spec`` has the :func:`weights_digest` ``recorded``, loaded in any weights dtype.

    That digest is all a Magic Image sidecar written before weight fingerprints records of its weights, and it was
    taken in the dtype that run loaded (float32 on a CPU, bfloat16 on a GPU). The model is loaded on the CPU in its
    stored dtype, from which a load in float32, bfloat16 or float16 is a cast: about a second for the default model,
    a full load for a 7B checkpoint; once per process and set of weight files.

    Returns:
        None for a hub id (no local files to load).
    """
    folder = Path(resolve_spec(spec))
    if not folder.is_dir():
        return None
    return _digest_matches(str(folder), _weight_files_state(folder), recorded)


@functools.lru_cache(maxsize=16)
def _digest_matches(folder: str, state: tuple[tuple[str, int, int], ...], recorded: str) -> bool:
    """:func:`matches_weights_digest` for a checkpoint folder; ``state`` keys the cache on its weight files."""
    stored = getattr(_read_config(folder, folder), "dtype", None)
    stored = stored if isinstance(stored, torch.dtype) and stored.is_floating_point else torch.float32
    model = load_vlm(folder, dtype=stored, device="cpu").model
    candidates = (None, *(d for d in (torch.float32, torch.bfloat16, torch.float16) if d != stored))
    return any(weights_digest(model, dtype) == recorded for dtype in candidates)


@functools.lru_cache(maxsize=16)
def _files_fingerprint(state: tuple[tuple[str, int, int], ...]) -> str:
    cache_path = visalign_home() / _FILE_HASH_CACHE
    known = _read_hash_cache(cache_path)
    digest = hashlib.sha256()
    for name, size, mtime_ns in state:
        key = f"{name}|{size}|{mtime_ns}"
        if key not in known:
            known[key] = sha256_file(name)
            _write_hash_cache(cache_path, known)
        digest.update(f"{Path(name).name}:{size}".encode())
        digest.update(known[key].encode())
    return digest.hexdigest()[:16]


def _read_hash_cache(path: Path) -> dict[str, str]:
    """The cached file hashes; an unreadable cache is ignored (it only saves time)."""
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in cached.items() if isinstance(v, str)} if isinstance(cached, dict) else {}


def _write_hash_cache(path: Path, known: dict[str, str]) -> None:
    """Keep the file hashes for the next process; a read-only home only costs the next process a re-hash."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, known)
    except OSError as exc:
        logger.debug("cannot keep weight file hashes in %s: %s", path, exc)
