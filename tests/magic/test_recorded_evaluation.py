"""A finished value system's recorded evaluation is kept, never silently replaced because a default changed.

The ``eval`` section is outside the checkpoint key, so until 2026-11-24 a Magic run resumed after the default
refusal judge changed (a config that names no ``eval.judge``) re-judged the finished image and overwrote the
figures its sidecar recorded, although README.md says such a run is refused with the setting named.
"""

from __future__ import annotations

import json

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.judges.registry import DEFAULT_REFUSAL_JUDGE
from visalign.magic import find_magic_image, optimize_magic_images

from .helpers import make, optimize_logged

OLD_JUDGE = "visalign-refusal-v5"  # stands in for the default a run was begun under


@pytest.fixture
def finished(tmp_path, tiny_checkpoints):
    """A two-step run under the old judge, finished: its sidecar records an evaluation judged by ``OLD_JUDGE``."""
    assert OLD_JUDGE != DEFAULT_REFUSAL_JUDGE
    model, out = tiny_checkpoints["llava"], tmp_path / "run"
    config = make(
        tmp_path,
        model,
        name="old.yaml",
        optim={"steps": 2},
        eval={"enabled": True, "judge": OLD_JUDGE, "max_new_tokens": 3, "batch_size": 4},
    )
    [first] = optimize_magic_images(config, out)
    assert first.metadata["evaluation"]["judge"] == OLD_JUDGE
    return model, out, first.metadata["evaluation"]


def test_a_changed_default_judge_is_refused_naming_the_setting_and_the_evaluation_is_kept(
    tmp_path, finished, monkeypatch
):
    import visalign.magic.optimize as optimize

    model, out, evaluation = finished
    sidecar = (out / "standard.json").read_bytes()
    # The same run under a config that names no judge: the default is now another one.
    default = make(
        tmp_path,
        model,
        name="default.yaml",
        optim={"steps": 2},
        eval={"enabled": True, "max_new_tokens": 3, "batch_size": 4},
    )
    assert default.eval.judge == DEFAULT_REFUSAL_JUDGE
    monkeypatch.setattr(optimize, "load_vlm", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    with pytest.raises(VisalignError) as refused:
        optimize_magic_images(default, out)
    message = str(refused.value)
    assert f"eval.judge: '{OLD_JUDGE}' -> '{DEFAULT_REFUSAL_JUDGE}'" in message
    assert str(out / "standard.json") in message and "\n" not in message
    assert (out / "standard.json").read_bytes() == sidecar  # nothing replaced
    assert not (out / "work" / "manifests").exists()  # refused before the manifest is touched
    monkeypatch.undo()

    # Naming the old judge, as README.md says, resumes and keeps the recorded evaluation.
    named = make(
        tmp_path,
        model,
        name="named.yaml",
        optim={"steps": 2},
        eval={"enabled": True, "judge": OLD_JUDGE, "max_new_tokens": 3, "batch_size": 4},
    )
    [again], steps = optimize_logged(named, out)
    assert steps == [] and again.metadata["evaluation"] == evaluation
    # Naming the new judge measures the image again on purpose.
    [remeasured], steps = optimize_logged(
        make(
            tmp_path,
            model,
            name="new.yaml",
            optim={"steps": 2},
            eval={"enabled": True, "judge": DEFAULT_REFUSAL_JUDGE, "max_new_tokens": 3, "batch_size": 4},
        ),
        out,
    )
    assert steps == [] and remeasured.metadata["evaluation"]["judge"] == DEFAULT_REFUSAL_JUDGE


@pytest.mark.parametrize("setting", ["max_new_tokens", "batch_size"])
def test_every_evaluation_setting_left_at_a_changed_default_is_refused(tmp_path, finished, setting):
    # The finished run named 3 tokens and batch 4; a config that leaves one of them out gets the default.
    model, out, _ = finished
    settings = {"enabled": True, "judge": OLD_JUDGE, "max_new_tokens": 3, "batch_size": 4}
    del settings[setting]
    with pytest.raises(VisalignError, match=rf"eval\.{setting}: [34] -> \d+"):
        optimize_magic_images(make(tmp_path, model, name="c.yaml", optim={"steps": 2}, eval=settings), out)


def test_a_run_with_evaluation_off_keeps_the_recorded_evaluation(tmp_path, finished):
    model, out, evaluation = finished
    [kept], steps = optimize_logged(
        make(tmp_path, model, name="off.yaml", optim={"steps": 2}, eval={"enabled": False}), out
    )
    assert steps == [] and kept.metadata["evaluation"] == evaluation
    assert json.loads((out / "standard.json").read_text())["evaluation"] == evaluation
    assert find_magic_image(out, "standard").metadata["evaluation"]["judge"] == OLD_JUDGE


def test_a_longer_run_is_measured_under_the_current_default(tmp_path, finished):
    # More steps give a new image: nothing recorded describes it, so it is measured, under today's default.
    model, out, _ = finished
    [longer], steps = optimize_logged(
        make(
            tmp_path,
            model,
            name="longer.yaml",
            optim={"steps": 3},
            eval={"enabled": True, "max_new_tokens": 3, "batch_size": 4},
        ),
        out,
    )
    assert steps == [("standard", 3)] and longer.metadata["evaluation"]["judge"] == DEFAULT_REFUSAL_JUDGE
