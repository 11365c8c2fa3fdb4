"""The Magic Image artefact: an 8-bit RGB PNG plus a JSON sidecar that says what it is for.

``<dir>/<value system>.png`` and ``<dir>/<value system>.json``; one pair per value system, so a deployment swaps
policies by choosing a file.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from visalign.errors import VisalignError
from visalign.images import load_image
from visalign.models import resolve_spec, tensor_to_pil, weights_fingerprint
from visalign.models.identity import processor_template_identity
from visalign.models.loading import matches_weights_digest
from visalign.models.processors import load_processor
from visalign.runs import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

FORMAT = "visalign-magic-image"
FORMAT_VERSION = 1
#: The placements a sidecar may record (``auto`` when it records none).
PLACEMENTS = ("auto", "prepend", "canvas", "square-canvas")


@dataclass
class MagicImage:
    """A loaded magic image and its sidecar metadata (model, value system, config hash, training statistics)."""

    image: Image.Image
    metadata: dict
    path: Path

    @property
    def value_system(self) -> str:
        """The value system the image was optimised for."""
        return str((self.metadata.get("value_system") or {}).get("name") or "")

    @property
    def placement(self) -> str:
        """``prepend`` or ``canvas``: how the image was attached during optimisation."""
        return str(self.metadata.get("placement", "auto"))


def save_magic_image(out_dir: str | Path, name: str, image: torch.Tensor, metadata: dict) -> Path:
    """Write ``image`` ((3, H, W) in [0, 1]) as ``out_dir/name.png`` (8-bit RGB) and its sidecar ``name.json``.

    Returns the PNG's path.
    """
    out_dir = Path(out_dir)
    buffer = io.BytesIO()
    tensor_to_pil(image).save(buffer, format="PNG")
    png = atomic_write_bytes(out_dir / f"{name}.png", buffer.getvalue())
    write_sidecar(png, metadata)
    return png


def write_sidecar(png: str | Path, metadata: dict) -> Path:
    """(Re)write the JSON sidecar of a magic image PNG atomically; returns its path."""
    path = Path(png).with_suffix(".json")
    atomic_write_json(path, {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata})
    return path


def load_magic_image(path: str | Path) -> MagicImage:
    """Load a magic image PNG and its sidecar.

    Raises:
        VisalignError: the PNG is missing or unreadable, the sidecar is missing, not a magic image sidecar, or has
            a field of the wrong shape (a hand edit); the message names the sidecar and the field.
    """
    path = Path(path)
    image = load_image(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise VisalignError(f"{path}: no sidecar {sidecar.name}; a magic image needs its JSON metadata beside it")
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VisalignError(f"{sidecar}: not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise VisalignError(f"{sidecar}: not a {FORMAT} sidecar (missing 'format': '{FORMAT}')")
    if problem := _sidecar_problem(metadata):
        raise VisalignError(f"{sidecar}: {problem}; restore the sidecar `visalign magic optimize` wrote")
    return MagicImage(image=image, metadata=metadata, path=path)


def _sidecar_problem(metadata: dict) -> str | None:
    """What in a sidecar's fields cannot be used (a hand edit): the fields apply and evaluation read, or None.

    Each field may be absent (older sidecars lack some); when present it must have the shape the writer gives it.
    """
    for name in ("model", "value_system", "weights_sha256"):
        if metadata.get(name) is not None and not isinstance(metadata[name], dict):
            return f"'{name}' must be a mapping, got {type(metadata[name]).__name__}"
    fields = {"model.spec": (metadata.get("model") or {}).get("spec"),
              "model.fingerprint": (metadata.get("model") or {}).get("fingerprint"),
              "value_system.name": (metadata.get("value_system") or {}).get("name"),
              "weights_sha256.before": (metadata.get("weights_sha256") or {}).get("before")}
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            return f"'{name}' must be a string, got {type(value).__name__}"
    if metadata.get("placement", "auto") not in PLACEMENTS:
        return f"'placement' must be one of {', '.join(PLACEMENTS)}, got {metadata['placement']!r}"
    return None


def find_magic_image(directory: str | Path, value_system: str) -> MagicImage:
    """Load the image optimised for ``value_system`` from a folder of artefacts.

    Raises:
        VisalignError: no image for that value system; the message lists the ones the folder holds.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise VisalignError(f"{directory}: magic image folder not found")
    available = sorted(p.stem for p in directory.glob("*.json") if p.with_suffix(".png").is_file())
    if value_system not in available:
        raise VisalignError(
            f"unknown value system {value_system!r}: {directory} holds magic images for "
            f"{', '.join(available) or 'none'}"
        )
    magic = load_magic_image(directory / f"{value_system}.png")
    if magic.value_system != value_system:
        raise VisalignError(f"{magic.path}: its sidecar says value system {magic.value_system!r}, not {value_system!r}")
    return magic


def model_mismatch(magic: MagicImage, spec: str) -> str | None:
    """Why ``magic`` cannot be expected to work on the model ``spec``, or None when nothing says so.

    Compares the weights recorded at optimisation time with the model's now (:func:`_weights_mismatch`), then the
    chat template identity (:func:`visalign.models.identity.template_identity`, from the processor alone: no weights
    load; images from before it was recorded are not checked for it).
    """
    return _weights_mismatch(magic, spec) or _template_mismatch(magic, spec)


def _weights_mismatch(magic: MagicImage, spec: str) -> str | None:
    """Why ``magic`` was optimised against other weights than ``spec`` has now, or None.

    By the recorded weights fingerprint (a hash of the weight files); a sidecar from before fingerprints has only
    the digest of the weights as that run loaded them (``weights_sha256.before``), which takes a model load to
    compare (:func:`visalign.models.loading.matches_weights_digest`). An image that can be checked neither way (no
    record of its weights, or a hub id) is used with a one-line warning.
    """
    fingerprint = (magic.metadata.get("model") or {}).get("fingerprint")
    digest = (magic.metadata.get("weights_sha256") or {}).get("before")
    if fingerprint and (current := weights_fingerprint(spec)) is not None:
        if current == fingerprint:
            return None
        return (
            f"{magic.path}: optimised against model weights {fingerprint}, but '{spec}' here has {current}; a "
            "magic image's pixels do not carry over to other weights. Run `visalign magic optimize` against "
            "this model (the embedded default model built on another machine can differ), or allow the "
            "mismatch (allow_model_mismatch) to study transfer on purpose"
        )
    if not fingerprint and digest and (matches := matches_weights_digest(spec, digest)) is not None:
        if matches:
            return None
        return (
            f"{magic.path}: optimised against other weights than '{spec}' has here (its sidecar, from before "
            f"weight fingerprints, records weights digest {digest[:16]}, which '{spec}' matches in no dtype); a "
            "magic image's pixels do not carry over to other weights. Run `visalign magic optimize` against "
            "this model, or allow the mismatch (allow_model_mismatch) to study transfer on purpose"
        )
    why = "a hub id has no local weight files" if fingerprint or digest else "its sidecar records no weights"
    _warn_unchecked(str(magic.path), spec, why)
    return None


@functools.cache
def _warn_unchecked(path: str, spec: str, why: str) -> None:
    """Warn once per process that an image is used on weights it cannot be checked against."""
    logger.warning("%s: cannot be checked against the weights of '%s' (%s); using it unchecked, though a magic image "
                   "works only on the weights it was optimised against: re-run `visalign magic optimize` against "
                   "this model for a checked one", path, spec, why)  # fmt: skip


def _template_mismatch(magic: MagicImage, spec: str) -> str | None:
    """Why ``magic`` was optimised under another chat template than ``spec`` has now, or None."""
    recorded = (magic.metadata.get("model") or {}).get("template")
    if not recorded:  # before the first read of ``spec``: a sidecar without one needs no model to check against
        return None
    folder = Path(resolve_spec(spec))
    if not folder.is_dir():
        return None
    current = processor_template_identity(load_processor(folder), spec)
    if current == recorded:
        return None
    return (f"{magic.path}: optimised under chat template {recorded}, but '{spec}' here renders conversations as "
            f"{current} (an edited template, system prompt or tokenizer); the image was trained on other tokens. Run "
            "`visalign magic optimize` against this model, or allow the mismatch (allow_model_mismatch)")
