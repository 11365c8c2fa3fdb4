"""A Magic Image checkpoint damaged on disk: one line naming the file and the way on, then the advice works."""

from __future__ import annotations

import pytest

from visalign.errors import VisalignError
from visalign.magic import load_magic_image, optimize_magic_images

from .helpers import make


@pytest.mark.parametrize("damage", ["empty", "cut", "garbled"])
def test_a_damaged_checkpoint_is_named_and_deleting_it_optimises_again(tmp_path, tiny_checkpoints, damage):
    model = tiny_checkpoints["llava"]
    [reference] = optimize_magic_images(make(tmp_path, model), tmp_path / "reference")
    out = tmp_path / "run"
    optimize_magic_images(make(tmp_path, model, name="half.yaml", optim={"steps": 2}), out)
    checkpoint = out / "work" / "standard" / "checkpoint.pt"
    data = checkpoint.read_bytes()
    damaged = {"empty": b"", "cut": data[: len(data) // 2], "garbled": b"\x80\x02garbage" + bytes(200)}[damage]
    checkpoint.write_bytes(damaged)

    with pytest.raises(VisalignError) as refused:
        optimize_magic_images(make(tmp_path, model), out)
    message = str(refused.value)
    assert message.startswith(f"{checkpoint}: damaged checkpoint (") and "\n" not in message
    assert message.endswith("delete it and run the same command again to optimise this value system from step 0")

    checkpoint.unlink()
    [again] = optimize_magic_images(make(tmp_path, model), out)
    assert load_magic_image(again.png).image.tobytes() == load_magic_image(reference.png).image.tobytes()
