"""Qwen-VL rotary positions computed before the forward: the same positions and log-probabilities as transformers."""

from __future__ import annotations

import pytest
import torch
from test_adapters import noise_image

from visalign.models import assistant, load_vlm, user


def _conversations():
    # unequal lengths and image sizes, so the batch is padded and the grids differ
    return [
        [user("Describe the picture in a few words.", noise_image(56, 84, 0)), assistant("Grey noise, nothing else.")],
        [user("What is shown?", noise_image(84, 56, 1)), assistant("Static.")],
        [user("Count to three."), assistant("One, two, three.")],
    ]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_positions_equal_transformers_own_and_so_do_logprobs(tiny_checkpoints, family):
    vlm = load_vlm(str(tiny_checkpoints[family]))
    batch = vlm.training_inputs(_conversations())
    ours = vlm.rope_positions(batch)
    assert ours is not None and ours.shape == (3, *batch["input_ids"].shape)
    theirs = vlm.model.model.compute_3d_position_ids(
        input_ids=batch["input_ids"], image_grid_thw=batch["image_grid_thw"], video_grid_thw=None,
        inputs_embeds=None, attention_mask=batch["attention_mask"], past_key_values=None,
        mm_token_type_ids=batch["mm_token_type_ids"])
    assert torch.equal(ours, theirs)
    # the image rows really use 3D positions: height and width differ somewhere
    assert not torch.equal(ours[1], ours[2])

    # end to end: the labelled tokens' log-probabilities from transformers' full forward (positions made inside)
    with torch.no_grad():
        got = vlm.token_logprobs(batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = vlm.model(**inputs, use_cache=False).logits[:, :-1].float()
        next_labels = batch["labels"][:, 1:]
        keep = next_labels != -100
        want = torch.log_softmax(logits[keep], dim=-1).gather(1, next_labels[keep][:, None])[:, 0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_families_without_multimodal_rope_get_none(tiny_checkpoints):
    vlm = load_vlm(str(tiny_checkpoints["llava"]))
    assert vlm.rope_positions(vlm.training_inputs(_conversations()[:1])) is None
