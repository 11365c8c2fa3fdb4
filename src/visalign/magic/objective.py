"""The dual objective, computed efficiently: L = l1 * L_harm + l2 * L_benign.

Every training request becomes a cached token row once (prompt, image placeholders, the first k target tokens);
a step then encodes the magic image once, shares that encoding across the batch, encodes only what depends on it
per sample (shared canvases on single-image models), reuses cached encodings of the users' own images, and
projects only the target positions to the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from visalign.magic.data import Example
from visalign.magic.placement import Placement, attach, compose_canvas, letterbox
from visalign.models import IGNORE_INDEX, VLM, ImageEncoding, assistant, collate_rows, pil_to_tensor, user

_TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")


def quantize_straight_through(image: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid in the forward pass and pass gradients straight through (what a PNG stores)."""
    return image + ((image * 255).round() / 255 - image).detach()


@dataclass
class Row:
    """One cached training row.

    Attributes:
        batch: single-row ``training_inputs`` without pixel values, cut after the first k target tokens.
        kind: ``harmful``, ``benign`` or ``unlikely`` (harmful request with the affirmative prefix as target).
        slots: what fills each image placeholder in order: ``magic``, ``user`` or ``canvas``.
        partner: the user's image as a tensor at the magic image's size (canvas) or as sent (prepend).
        user_encodings: the user's images after the vision tower (computed once; they never change).
        square: the canvas is centred on a white square (``square-canvas`` placement).
    """

    batch: dict[str, torch.Tensor]
    kind: str
    slots: list[str]
    partner: torch.Tensor | None = None
    user_encodings: list[ImageEncoding] | None = None
    square: bool = False

    @property
    def has_user_image(self) -> bool:
        """Whether the request carries the user's own image (in its own slot or on the shared canvas)."""
        return self.slots != ["magic"]


def _first_k(batch: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Cut a single-row batch after its k-th labelled token (later tokens cannot change earlier logits)."""
    labelled = (batch["labels"][0] != IGNORE_INDEX).nonzero()[:, 0]
    if len(labelled) <= k:
        return batch
    end = int(labelled[k - 1]) + 1
    return {key: (value[:, :end] if key in _TOKEN_KEYS else value) for key, value in batch.items()}


def _without_end_of_turn(batch: dict[str, torch.Tensor], special_ids: set[int]) -> dict[str, torch.Tensor]:
    """Stop scoring the special tokens that close a single-row batch's answer (the end-of-turn marker)."""
    labels = batch["labels"].clone()
    labelled = (labels[0] != IGNORE_INDEX).nonzero()[:, 0].tolist()
    while len(labelled) > 1 and int(labels[0, labelled[-1]]) in special_ids:
        labels[0, labelled.pop()] = IGNORE_INDEX
    return _first_k({**batch, "labels": labels}, len(labelled))


def build_row(vlm: VLM, example: Example, target: str, kind: str, *, placement: Placement,
              size: tuple[int, int], first_k: int) -> Row:
    """Tokenise one request with placeholder images of the right sizes and cache it as a :class:`Row`.

    An ``unlikely`` row scores its prefix only: the prefix is the opening of an answer, not an answer that ends
    there, so the end-of-turn marker after it is not part of what the unlikelihood term pushes down. Likewise a
    benign answer cut at its token budget (``example.complete`` False) did not end there: training its end-of-turn
    marker would teach the image to stop benign answers mid-sentence. (When ``first_k`` cuts the row before the
    marker, as in every shipped config, dropping it first changes nothing.)
    """
    placeholder = Image.new("RGB", (size[1], size[0]), "white")
    conversation = attach([user(example.prompt, *example.images), assistant(target)], placeholder, placement)
    batch = vlm.training_inputs([conversation])
    if kind == "unlikely" or (kind == "benign" and not example.complete):
        batch = _without_end_of_turn(batch, set(vlm.tokenizer.all_special_ids))
    batch = _first_k(batch, first_k)
    batch.pop("pixel_values", None)
    if placement == "prepend":
        slots = ["magic"] + ["user"] * len(example.images)
        partner = None
    elif example.images:
        slots = ["canvas"]
        partner = pil_to_tensor(letterbox(example.images[0], size)).to(vlm.device)
    else:
        slots, partner = ["magic"], None
    return Row(batch=batch, kind=kind, slots=slots, partner=partner, square=placement == "square-canvas")


def build_rows(vlm: VLM, examples: list[Example], *, placement: Placement, size: tuple[int, int], first_k: int,
               unlikelihood_prefix: str | None = None) -> list[list[Row]]:
    """Rows for each example: its target row, plus an ``unlikely`` row for harmful ones when a prefix is given."""
    rows = []
    for example in examples:
        own = [build_row(vlm, example, example.target, example.kind, placement=placement, size=size,
                         first_k=first_k)]
        if example.kind == "harmful" and unlikelihood_prefix:
            own.append(build_row(vlm, example, unlikelihood_prefix, "unlikely", placement=placement, size=size,
                                 first_k=first_k))
        rows.append(own)
    return rows


def _encodings(vlm: VLM, rows: list[Row], magic: torch.Tensor) -> list[ImageEncoding]:
    """Encodings for every placeholder of ``rows``: the magic image once, canvases together, user images cached."""
    shared = vlm.encode_images([magic])[0]
    canvases = [compose_canvas(magic, row.partner, square=row.square) for row in rows if "canvas" in row.slots]
    canvas_encodings = iter(vlm.encode_images(canvases) if canvases else [])
    encodings = []
    for row in rows:
        users = iter(row.user_encodings or [])
        for slot in row.slots:
            if slot == "magic":
                encodings.append(shared)
            elif slot == "canvas":
                encodings.append(next(canvas_encodings))
            else:
                encodings.append(next(users))  # StopIteration here means prepare_user_encodings was not run
    return encodings


@torch.no_grad()
def prepare_user_encodings(vlm: VLM, examples: list[Example], rows: list[list[Row]]) -> None:
    """Encode the users' own images once (prepend placement); they do not depend on the magic image."""
    for example, own in zip(examples, rows, strict=True):
        if not any("user" in row.slots for row in own):
            continue
        encodings = [ImageEncoding(e.features.detach(), tuple(t.detach() for t in e.deepstack))
                     for e in vlm.encode_images(example.images)]
        for row in own:
            if "user" in row.slots:
                row.user_encodings = encodings


def row_logprobs(vlm: VLM, rows: list[Row], magic: torch.Tensor) -> torch.Tensor:
    """Mean target-token log-probability of each row with ``magic`` attached (differentiable in ``magic``)."""
    batch = collate_rows([row.batch for row in rows], pad_id=vlm.tokenizer.pad_token_id)
    logprobs = vlm.token_logprobs(batch, images=_encodings(vlm, rows, magic))
    owner = (batch["labels"][:, 1:] != IGNORE_INDEX).nonzero()[:, 0]
    sums = torch.zeros(len(rows), device=logprobs.device).index_add(0, owner, logprobs)
    counts = torch.bincount(owner, minlength=len(rows)).clamp(min=1)
    return sums / counts


def dual_loss(vlm: VLM, rows: list[Row], magic: torch.Tensor, *, l1: float, l2: float,
              unlikelihood_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """L = l1 * (NLL(refusal) + w * unlikelihood(affirmative)) + l2 * NLL(benign answer) over one mixed batch.

    Returns the loss and its parts (floats) for the training log. When the batch mixes requests with and without
    a user image (text and typographic forms), the parts also split each NLL by form (``harm_nll_text``,
    ``harm_nll_image``, ``benign_nll_text``, ``benign_nll_image``, for the forms present): a benign term that
    falls on text while staying high on images is an image that refuses every typographic request.
    """
    logprobs = row_logprobs(vlm, rows, magic)
    kinds = [row.kind for row in rows]

    def mean(kind: str, values: torch.Tensor) -> torch.Tensor:
        picked = [i for i, k in enumerate(kinds) if k == kind]
        return values[picked].mean() if picked else values.new_zeros(())

    harm = -mean("harmful", logprobs)
    benign = -mean("benign", logprobs)
    # Unlikelihood: -log(1 - p) of the affirmative prefix, from its mean token log-probability.
    unlikely = -mean("unlikely", torch.log1p(-logprobs.exp().clamp(max=1 - 1e-6)))
    loss = l1 * (harm + unlikelihood_weight * unlikely) + l2 * benign
    parts = {"loss": float(loss.detach()), "harm_nll": float(harm.detach()), "benign_nll": float(benign.detach())}
    if "unlikely" in kinds:
        parts["unlikelihood"] = float(unlikely.detach())
    parts.update(_nll_by_form(rows, logprobs.detach()))
    return loss, parts


def _nll_by_form(rows: list[Row], logprobs: torch.Tensor) -> dict[str, float]:
    """Mean NLL of harmful and benign rows split by whether the user sent an image; empty for one-form batches."""
    if len({row.has_user_image for row in rows}) < 2:
        return {}
    parts = {}
    for kind, name in (("harmful", "harm"), ("benign", "benign")):
        for form, has_image in (("text", False), ("image", True)):
            picked = [i for i, row in enumerate(rows) if row.kind == kind and row.has_user_image == has_image]
            if picked:
                parts[f"{name}_nll_{form}"] = float(-logprobs[picked].mean())
    return parts
