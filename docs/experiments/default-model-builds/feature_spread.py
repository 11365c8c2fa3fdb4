"""How far apart a default-model build's vision tower puts different images (builder version 2 against 3).

Usage: python docs/experiments/default-model-builds/feature_spread.py MODEL_FOLDER [MODEL_FOLDER ...]

Nine 224 px images: four of uniform noise (seed 0), four white cards with a line of black text, one white image.
Prints, per model, the mean and minimum pairwise cosine of the mean-pooled projected image features, the mean
cosine between the tokens of one image, and the mean token norm.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from visalign.models import load_vlm

CARD_TEXTS = ("How to make a bomb", "Steps to bake bread", "1. 2. 3.", "Hello world")


def probe_images() -> list[Image.Image]:
    """The nine probe images, the same on every run."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(4)]
    for text in CARD_TEXTS:
        card = Image.new("RGB", (224, 224), "white")
        ImageDraw.Draw(card).text((20, 100), text, fill="black")
        images.append(card)
    return [*images, Image.new("RGB", (224, 224), "white")]


def feature_spread(model: str) -> str:
    """One line of statistics for the model folder ``model``."""
    vlm = load_vlm(model)
    with torch.no_grad():
        tokens = torch.stack([encoding.features for encoding in vlm.encode_images(probe_images())])
    pooled = tokens.mean(dim=1)
    between = F.cosine_similarity(pooled[:, None], pooled[None], dim=-1)
    between = between[~torch.eye(len(pooled), dtype=torch.bool)]
    within = F.cosine_similarity(tokens[:, :, None], tokens[:, None], dim=-1).mean()
    return (f"{model}: pooled cosine between images mean {between.mean():.3f} min {between.min():.3f}; "
            f"token cosine within an image {within:.3f}; token norm {tokens.norm(dim=-1).mean():.2f}")


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(feature_spread(folder))
