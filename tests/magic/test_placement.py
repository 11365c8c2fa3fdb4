"""Placement for every family, canvas composition, and the shared-encoding loss against the adapter's own loss."""

from __future__ import annotations

import pytest
import torch
from family_tables import FamilyTable
from PIL import Image

from visalign.errors import VisalignError
from visalign.magic import attach, compose_canvas, letterbox, resolve_placement
from visalign.magic.data import Example
from visalign.magic.objective import build_rows, prepare_user_encodings, row_logprobs
from visalign.magic.placement import crops_to_square, working_size
from visalign.models import FAMILIES, assistant, load_vlm, pil_to_tensor, user

#: Where ``auto`` puts a Magic Image for each family: written by hand from the family's published model (whether it
#: takes several images per conversation), so that a wrong ``multi_image`` in the registry fails here.
FAMILY_PLACEMENT = FamilyTable(
    "FAMILY_PLACEMENT", "tests/magic/test_placement.py",
    "'prepend' if its model takes several images per conversation, else 'canvas'",
    {"qwen2_5_vl": "prepend", "qwen3_vl": "prepend", "llava": "canvas", "llava_next": "canvas"},
)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_auto_placement_per_family(family):
    assert resolve_placement(FAMILIES[family], "auto") == FAMILY_PLACEMENT[family]
    assert resolve_placement(FAMILIES[family], "canvas") == "canvas"


@pytest.mark.parametrize("family", sorted(f for f, placement in FAMILY_PLACEMENT.items() if placement == "canvas"))
def test_prepend_refused_on_single_image_families(family):
    with pytest.raises(VisalignError, match="takes one image per conversation"):
        resolve_placement(FAMILIES[family], "prepend")


def test_prepend_puts_magic_image_first_of_first_user_turn():
    magic = Image.new("RGB", (8, 8), "red")
    photo = Image.new("RGB", (20, 10), "blue")
    conversation = [user("first", photo), assistant("ok"), user("second")]
    attached = attach(conversation, magic, "prepend")
    assert attached[0].images == [magic, photo]
    assert attached[2].images == []
    assert conversation[0].images == [photo]  # the caller's conversation is not modified


def test_canvas_composition_pixels():
    magic = torch.zeros(3, 4, 4)
    magic[0] = 128 / 255  # on the 8-bit grid, as every optimised image is
    photo = Image.new("RGB", (8, 4), (0, 0, 255))  # 2:1, letterboxed into 4x4: rows 1-2 blue, rows 0 and 3 white
    canvas = attach([user("q", photo)], magic, "canvas")[0].images[0]
    assert canvas.shape == (3, 4, 8)
    assert torch.equal(canvas[:, :, :4], magic)
    right = canvas[:, :, 4:]
    assert torch.equal(right[:, 1:3], torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 2, 4))
    assert torch.equal(right[:, 0], torch.ones(3, 4))
    # PIL magic images give a PIL canvas with the same pixels (what inference sends through the processor).
    pil_canvas = attach([user("q", photo)], Image.fromarray((magic * 255).byte().permute(1, 2, 0).numpy()),
                        "canvas")[0].images[0]
    assert torch.equal(pil_to_tensor(pil_canvas), canvas)
    # Without a user image the magic image goes alone.
    assert attach([user("q")], magic, "canvas")[0].images[0] is magic


def test_canvas_goes_to_the_turn_that_carries_the_users_image(tiny_checkpoints):
    magic = Image.new("RGB", (16, 16), "red")
    photo = Image.new("RGB", (40, 30), "blue")
    conversation = [user("hi"), assistant("hello, how can I help?"), user("what is in this picture?", photo)]
    attached = attach(conversation, magic, "canvas")
    assert attached[0].images == [] and len(attached[2].images) == 1
    canvas = attached[2].images[0]
    assert canvas.size == (32, 16)
    assert canvas.getpixel((0, 8)) == (255, 0, 0) and canvas.getpixel((24, 8)) == (0, 0, 255)
    # the single-image model answers it (it used to get two images: magic in turn 1, the photo in turn 3)
    vlm = load_vlm(str(tiny_checkpoints["llava"]), device="cpu")
    inputs = vlm.chat_inputs([attached])
    assert inputs["pixel_values"].shape[0] == 1  # one image reaches the model: the canvas
    [answer] = vlm.generate([attached], max_new_tokens=2)
    assert answer == vlm.generate([attached], max_new_tokens=2)[0]  # answered (greedy: the same twice)
    with pytest.raises(VisalignError, match="user images in 2 turns"):
        attach([user("a", photo), assistant("b"), user("c", photo)], magic, "canvas")


def test_letterbox_and_canvas_shape_errors():
    assert letterbox(Image.new("RGB", (10, 40), "black"), (8, 8)).size == (8, 8)
    with pytest.raises(VisalignError, match="canvas halves differ"):
        compose_canvas(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5))
    with pytest.raises(VisalignError, match="no user turn"):
        attach([assistant("hi")], torch.zeros(3, 4, 4), "prepend")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shared_encoding_loss_matches_per_sample_forward(tiny_checkpoints, family):
    """Our batched step (magic image encoded once, user images cached) equals the adapter's plain loss per row."""
    vlm = load_vlm(str(tiny_checkpoints[family]), device="cpu")
    placement = resolve_placement(vlm.family, square_crop=crops_to_square(vlm))  # LLaVA-1.5: square-canvas
    size = working_size(vlm)
    generator = torch.Generator().manual_seed(0)
    magic = torch.rand(3, *size, generator=generator)
    photo = Image.fromarray((torch.rand(24, 40, 3, generator=generator) * 255).byte().numpy())
    examples = [Example("a", "harmful", "tell me a secret", [], target="no way"),
                Example("b", "benign", "describe this", [photo], target="a noisy picture of things"),
                Example("c", "benign", "hello there", [], target="hi, how can I help")]
    rows = build_rows(vlm, examples, placement=placement, size=size, first_k=3)
    prepare_user_encodings(vlm, examples, rows)
    flat = [r for own in rows for r in own]
    ours = row_logprobs(vlm, flat, magic)
    for example, value in zip(examples, ours, strict=True):
        conversation = attach([user(example.prompt, *example.images), assistant(example.target)], magic, placement)
        batch = vlm.training_inputs([conversation])
        labelled = (batch["labels"][0] != -100).nonzero()[:, 0]
        cut = int(labelled[2]) + 1  # first k = 3 target tokens
        batch = {k: (v[:, :cut] if k in ("input_ids", "attention_mask", "labels", "mm_token_type_ids") else v)
                 for k, v in batch.items()}
        assert float(value.detach()) == pytest.approx(-float(vlm.loss(batch).detach()), abs=1e-4)
    # Gradients reach the pixels.
    magic.requires_grad_(True)
    row_logprobs(vlm, flat, magic).sum().backward()
    assert magic.grad is not None and magic.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_the_unlikelihood_row_scores_the_prefix_and_not_the_end_of_turn(tiny_checkpoints, family):
    vlm = load_vlm(str(tiny_checkpoints[family]), device="cpu")
    example = Example("a", "harmful", "tell me a secret", [], target="no way")
    [[refusal, unlikely]] = build_rows(vlm, [example], placement=resolve_placement(vlm.family),
                                       size=working_size(vlm), first_k=64, unlikelihood_prefix="Sure, here is")
    def scored(row):
        labels = row.batch["labels"][0]
        return vlm.tokenizer.decode(labels[labels != -100])

    assert scored(unlikely).strip() == "Sure, here is"
    assert scored(refusal).strip().startswith("no way")  # an answer's own end-of-turn stays scored
    assert any(token in scored(refusal) for token in ("<|im_end|>", "</s>"))


def test_a_centre_cropping_processor_sees_the_whole_canvas(tiny_checkpoints):
    """LLaVA-1.5's CLIP processor crops a 1:2 canvas to its middle; the square canvas loses nothing to the crop."""
    vlm = load_vlm(str(tiny_checkpoints["llava"]), device="cpu")
    assert crops_to_square(vlm) and not crops_to_square(load_vlm(str(tiny_checkpoints["llava_next"]), device="cpu"))
    placement = resolve_placement(vlm.family, square_crop=True)
    assert placement == "square-canvas" and resolve_placement(vlm.family, "canvas", square_crop=True) == "canvas"
    size = working_size(vlm)
    generator = torch.Generator().manual_seed(1)
    magic = torch.rand(3, *size, generator=generator)
    photo = Image.fromarray((torch.rand(*size, 3, generator=generator) * 255).byte().numpy())
    processor = vlm.processor.image_processor

    def tower_input(layout: str, blank: slice) -> torch.Tensor:
        canvas = attach([user("q", photo)], magic, layout)[0].images[0].clone()
        canvas[:, :, blank] = 0.0  # black out a quarter of the pair's width
        return processor(canvas, do_rescale=False, return_tensors="pt")["pixel_values"]

    width = 2 * size[1]
    outer_quarters = (slice(0, width // 4), slice(3 * width // 4, width))  # magic's left, the photo's right half
    for layout, seen in (("canvas", False), ("square-canvas", True)):
        untouched = tower_input(layout, slice(0, 0))
        assert [not torch.equal(tower_input(layout, q), untouched) for q in outer_quarters] == [seen, seen], layout
    # training follows: the loss reaches the magic image's left half through the square canvas
    example = Example("b", "benign", "describe this", [photo], target="a noisy picture")
    [[row]] = build_rows(vlm, [example], placement=placement, size=size, first_k=4)
    magic.requires_grad_(True)
    row_logprobs(vlm, [row], magic).sum().backward()
    assert magic.grad[:, :, : size[1] // 2].abs().sum() > 0
