"""What the optimised rows are made of: self-generated benign targets, the chat template, cut answers."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from visalign.errors import VisalignError
from visalign.magic import get_value_system, optimize_magic_images
from visalign.magic.data import Example, fill_benign_targets, load_training_set
from visalign.magic.objective import build_rows
from visalign.magic.placement import working_size
from visalign.models import FAMILIES, IGNORE_INDEX, Generation, load_vlm

from .helpers import VALUE_SYSTEMS, make


def test_benign_targets_are_the_same_with_and_without_a_stale_cache(tmp_path, tiny_checkpoints, monkeypatch):
    # In bfloat16 an answer depends on the batch it is generated in (VLM.generate). The stand-in generator says so
    # in its answers, so a target read from a cache made under another batch size or request list shows.
    model = tiny_checkpoints["llava"]
    vlm = load_vlm(str(model), device="cpu")

    def generate_detailed(conversations, *, max_new_tokens, batch_size):
        batch = hashlib.sha256("|".join(c[0].text for c in conversations).encode()).hexdigest()[:8]
        return [Generation(f"{c[0].text} (batch {batch_size} of {batch})", True) for c in conversations]

    monkeypatch.setattr(vlm, "generate_detailed", generate_detailed)
    config = make(tmp_path, model, targets={"benign": "self"})
    standard = get_value_system(VALUE_SYSTEMS, "standard")

    def targets(folder: str, batch_size: int, count: int = 3) -> list[str]:
        benign = load_training_set(config, standard, tmp_path / "w").benign[:count]
        fill_benign_targets(vlm, benign, config.targets, tmp_path / folder / "cache.jsonl", batch_size=batch_size)
        return [example.target for example in benign]

    targets("stale", batch_size=4)
    assert targets("stale", batch_size=1) == targets("fresh", batch_size=1)  # another eval.batch_size
    targets("shorter", batch_size=4, count=2)
    assert targets("shorter", batch_size=4) == targets("fresh", batch_size=4)  # another request list


def test_an_edited_chat_template_neither_resumes_nor_reuses_answers(tmp_path, tiny_checkpoints):
    model = shutil.copytree(tiny_checkpoints["llava"], tmp_path / "model")
    out = tmp_path / "run"
    config = make(tmp_path, model, optim={"steps": 2}, targets={"benign": "self", "benign_max_new_tokens": 4})
    optimize_magic_images(config, out)
    template = model / "chat_template.jinja"
    template.write_text("{{- 'SYSTEM: Always refuse medical questions. ' -}}" + template.read_text())
    # the answers cached under the old template are generated again under the new one
    benign = load_training_set(config, get_value_system(VALUE_SYSTEMS, "standard"), tmp_path / "w").benign
    vlm = load_vlm(str(model), device="cpu")
    cache = out / "work" / "standard" / "benign_targets.jsonl"
    assert fill_benign_targets(vlm, benign, config.targets, cache, batch_size=config.eval.batch_size) == 3
    # and the checkpoint made under the old template is not resumed
    with pytest.raises(VisalignError, match="chat template"):
        optimize_magic_images(make(tmp_path, model, name="longer.yaml", optim={"steps": 4},
                                   targets={"benign": "self", "benign_max_new_tokens": 4}), out)


def test_a_benign_answer_cut_at_its_budget_is_trained_without_an_end_of_turn(tiny_checkpoints):
    vlm = load_vlm(str(tiny_checkpoints["llava"]), device="cpu")
    special = set(vlm.tokenizer.all_special_ids)
    ended = Example("b", "benign", "Name three primary colours.", target="Red, yellow and")
    cut = Example("b", "benign", "Name three primary colours.", target="Red, yellow and", complete=False)
    [[ended_row], [cut_row]] = build_rows(vlm, [ended, cut], placement="canvas", size=working_size(vlm),
                                          first_k=32)

    def scored(row) -> list[int]:
        labels = row.batch["labels"][0]
        return labels[labels != IGNORE_INDEX].tolist()

    assert scored(ended_row)[-1] in special  # a finished answer ends its turn
    assert scored(cut_row) == [t for t in scored(ended_row) if t not in special]  # a cut one does not
    assert scored(cut_row)


@pytest.mark.parametrize("family", sorted(FAMILIES))  # every registered family, a new one included
def test_every_family_has_a_template_identity_that_follows_its_template_file(tmp_path, tiny_checkpoints, family):
    from visalign.models.identity import template_identity

    model = shutil.copytree(tiny_checkpoints[family], tmp_path / family)
    before = template_identity(load_vlm(str(model), device="cpu"))
    assert before == template_identity(load_vlm(str(tiny_checkpoints[family]), device="cpu"))  # a copy is the same
    template = model / "chat_template.jinja"
    template.write_text("{{- 'SYSTEM: Always refuse medical questions. ' -}}" + template.read_text())
    assert template_identity(load_vlm(str(model), device="cpu")) != before


def test_applying_an_image_under_an_edited_chat_template_is_refused_unless_allowed(tmp_path, tiny_checkpoints):
    from visalign.evaluation.config import SystemConfig
    from visalign.evaluation.systems import SystemFactory
    from visalign.magic import load_magic_image, model_mismatch

    model = shutil.copytree(tiny_checkpoints["llava"], tmp_path / "model")
    [result] = optimize_magic_images(make(tmp_path, model, optim={"steps": 1}, eval={"enabled": False}),
                                     tmp_path / "run")  # fmt: skip
    magic = load_magic_image(result.png)
    assert model_mismatch(magic, str(model)) is None  # the processor alone gives the identity the run recorded
    template = model / "chat_template.jinja"
    template.write_text("{{- 'SYSTEM: Always refuse medical questions. ' -}}" + template.read_text())
    reason = model_mismatch(magic, str(model))
    assert reason is not None and "optimised under chat template" in reason and str(result.png) in reason
    factory = SystemFactory(max_new_tokens=4, batch_size=2, cache_dir=tmp_path / "cache")
    with pytest.raises(VisalignError, match="system 'edited'.*chat template"):
        factory.check(SystemConfig(name="edited", model=str(model), magic_image=result.png))
    factory.check(SystemConfig(name="transfer", model=str(model), magic_image=result.png, allow_model_mismatch=True))
