"""Conversations as plain data: turns of text with images, turned into a processor's chat messages."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from visalign.images import to_rgb

#: An image is a PIL image or a float tensor (3, H, W) with values in [0, 1] (differentiable for Magic Image).
ImageLike = Image.Image | torch.Tensor


@dataclass
class Turn:
    """One message: a role (``system``, ``user`` or ``assistant``), its text and the images shown before the text."""

    role: str
    text: str
    images: list[ImageLike] = field(default_factory=list)


Conversation = list[Turn]


def user(text: str, *images: ImageLike) -> Turn:
    """Return a user turn with ``images`` placed before ``text``."""
    return Turn("user", text, list(images))


def assistant(text: str) -> Turn:
    """Return an assistant turn."""
    return Turn("assistant", text)


def to_chat_messages(conversation: Conversation) -> list[dict]:
    """Convert turns to the message format that Hugging Face chat templates read (image parts, then text)."""
    messages = []
    for turn in conversation:
        parts = [{"type": "image"} for _ in turn.images]
        parts.append({"type": "text", "text": turn.text})
        messages.append({"role": turn.role, "content": parts})
    return messages


def conversation_images(conversation: Conversation) -> list[ImageLike]:
    """Return the images of a conversation in the order their placeholders appear."""
    return [image for turn in conversation for image in turn.images]


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """Quantise a (3, H, W) tensor in [0, 1] to an 8-bit RGB PIL image."""
    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """Return a PIL image as a float32 (3, H, W) RGB tensor in [0, 1].

    Transparency is laid on white (:func:`visalign.images.to_rgb`), as the Hugging Face image processors do, so a
    transparent image gives the processor's pixels, not black where it is clear.
    """
    array = torch.frombuffer(bytearray(to_rgb(image).tobytes()), dtype=torch.uint8)
    return array.view(image.height, image.width, 3).permute(2, 0, 1).float() / 255.0
