"""Where the magic image goes in a conversation: an extra image first, or beside the user's image on one canvas.

Multi-image models (Qwen-VL) see the magic image as the first image of the first user turn. Single-image models
(LLaVA) see it alone in the first user turn when the user sent no image, or else composed with the user's image,
in the turn that carries it, on a shared canvas: the magic image on the left, the user's image letterboxed into
an equal square on the right. A processor that centre-crops
to a square (LLaVA-1.5's CLIP) would keep only the middle of that 1:2 canvas, half of each image, so there the
pair is centred on a white square first (``square-canvas``, LLaVA's own "pad" idea). Training and inference
build the canvas with the same functions, so what the optimiser saw is what the deployed model sees.
"""

from __future__ import annotations

from typing import Literal

import torch
from PIL import Image

from visalign.errors import VisalignError
from visalign.images import to_rgb
from visalign.models import VLM, Conversation, Family, Turn, pil_to_tensor, tensor_to_pil
from visalign.models.conversation import ImageLike
from visalign.models.pixels import native_image_size, pixel_function, square_image_pixels

Placement = Literal["prepend", "canvas", "square-canvas"]


def crops_to_square(vlm: VLM) -> bool:
    """Whether the model's image processor centre-crops every image to a square (CLIP-style, as LLaVA-1.5)."""
    processor = vlm.processor.image_processor
    return pixel_function(processor) is square_image_pixels and bool(getattr(processor, "do_center_crop", False))


def resolve_placement(family: Family, requested: str = "auto", *, square_crop: bool = False) -> Placement:
    """Turn ``auto`` into the family's placement and refuse ``prepend`` on single-image families.

    Args:
        family: the model's family (multi-image or not).
        requested: ``auto``, ``prepend``, ``canvas`` or ``square-canvas``.
        square_crop: the processor centre-crops to a square (:func:`crops_to_square`): ``auto`` then gives
            ``square-canvas``, so that the crop cuts nothing off. An explicit ``canvas`` (as recorded in the sidecar
            of an image made before 2026-11-23) is kept, so an image is always applied as it was trained.
    """
    if requested not in ("auto", "prepend", "canvas", "square-canvas"):
        raise VisalignError(f"unknown placement {requested!r}; use auto, prepend, canvas or square-canvas")
    if requested == "prepend" and not family.multi_image:
        raise VisalignError(f"{family.name} takes one image per conversation; use placement 'canvas' or 'auto'")
    if requested == "prepend" or (requested == "auto" and family.multi_image):
        return "prepend"
    if requested == "auto":
        return "square-canvas" if square_crop else "canvas"
    return requested  # type: ignore[return-value]


def working_size(vlm: VLM, side: int | None = None) -> tuple[int, int]:
    """(height, width) of the magic image: ``side`` squared, or the size the processor takes without resampling."""
    if side is not None:
        return side, side
    return native_image_size(vlm.processor.image_processor)


def letterbox(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Fit ``image`` inside ``size`` (height, width), keeping its aspect ratio, centred on white.

    Transparent pixels are laid on white too (:func:`visalign.images.to_rgb`), as the model's processor would.
    """
    height, width = size
    scale = min(width / image.width, height / image.height)
    fitted = to_rgb(image).resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
    )
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
    return canvas


def compose_canvas(magic: torch.Tensor, other: torch.Tensor, *, square: bool = False) -> torch.Tensor:
    """Put two (3, H, W) images side by side: the magic image left, the other right (differentiable).

    With ``square``, the pair is centred on a white square canvas (bands above and below it).
    """
    if magic.shape != other.shape:
        raise VisalignError(f"canvas halves differ in shape: {tuple(magic.shape)} vs {tuple(other.shape)}")
    pair = torch.cat([magic, other.to(magic.dtype)], dim=2)
    if not square or pair.shape[1] >= pair.shape[2]:
        return pair
    top = (pair.shape[2] - pair.shape[1]) // 2
    bottom = pair.shape[2] - pair.shape[1] - top
    return torch.nn.functional.pad(pair, (0, 0, top, bottom), value=1.0)  # pixels are in [0, 1]: 1 is white


def place_images(magic: ImageLike, user_images: list[ImageLike], placement: Placement) -> list[ImageLike]:
    """The images a user turn shows once the magic image is attached.

    Args:
        magic: the magic image (PIL, or a (3, H, W) tensor while optimising).
        user_images: the images the user sent in that turn.
        placement: ``prepend``, ``canvas`` or ``square-canvas``.
    """
    if placement == "prepend":
        return [magic, *user_images]
    if not user_images:
        return [magic]
    if len(user_images) > 1:
        raise VisalignError("a single-image model takes one user image beside the magic image, got several")
    magic_tensor = magic if isinstance(magic, torch.Tensor) else pil_to_tensor(magic)
    size = tuple(magic_tensor.shape[-2:])
    other = user_images[0]
    other_tensor = pil_to_tensor(letterbox(other, size)) if isinstance(other, Image.Image) else other
    canvas = compose_canvas(magic_tensor, other_tensor.to(magic_tensor.device), square=placement == "square-canvas")
    return [canvas if isinstance(magic, torch.Tensor) else tensor_to_pil(canvas)]


def attach(conversation: Conversation, magic: ImageLike, placement: Placement) -> Conversation:
    """Return a copy of ``conversation`` with the magic image attached to one user turn.

    ``prepend`` puts it first in the first user turn. The canvas placements compose it with the user's image, so
    they attach to the user turn that carries that image (the first user turn when there is none): a photo sent
    in a later turn shares the canvas instead of becoming a second image the model cannot take.

    Raises:
        VisalignError: no user turn, or (canvas) user images in more than one turn.
    """
    users = [index for index, turn in enumerate(conversation) if turn.role == "user"]
    if not users:
        raise VisalignError("the conversation has no user turn to attach the magic image to")
    target = users[0]
    if placement != "prepend":
        with_images = [index for index in users if conversation[index].images]
        if len(with_images) > 1:
            raise VisalignError(
                f"a single-image model takes one image per conversation; this one has user images in "
                f"{len(with_images)} turns, so the magic image has no single image to share a canvas with"
            )
        target = with_images[0] if with_images else target
    attached = list(conversation)
    turn = conversation[target]
    attached[target] = Turn(turn.role, turn.text, place_images(magic, list(turn.images), placement))
    return attached
