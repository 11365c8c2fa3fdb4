"""The optimiser on a tiny random LLaVA: resume, frozen weights, 8-bit artefact fidelity, bad input, apply."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from visalign.errors import VisalignError
from visalign.magic import find_magic_image, load_magic_image, optimize_magic_images
from visalign.magic.data import fill_benign_targets, load_training_set
from visalign.magic.objective import build_rows, dual_loss, row_logprobs
from visalign.magic.optimize import mixed_batch, weights_digest
from visalign.magic.placement import working_size
from visalign.magic.value_systems import get_value_system
from visalign.models import load_vlm, pil_to_tensor, weights_fingerprint
from visalign.models.random_checkpoints import write_random_checkpoint

from .helpers import VALUE_SYSTEMS, make, optimize_logged, tiny_config, write_config, write_jsonl
from .test_config import assert_one_line_error, run_cli


def test_resume_continues_exactly_and_weights_stay(tmp_path, tiny_checkpoints):
    model = tiny_checkpoints["llava"]
    straight = make(tmp_path, model)
    [full] = optimize_magic_images(straight, tmp_path / "straight")
    # Same job in two runs: 2 steps, then the same config extended to 4 steps resumes from the checkpoint.
    optimize_magic_images(make(tmp_path, model, name="half.yaml", optim={"steps": 2}), tmp_path / "split")
    [resumed], steps = optimize_logged(straight, tmp_path / "split")
    assert steps == [("standard", 3), ("standard", 4)]  # resumed: steps 1 and 2 are not taken again
    assert resumed.metadata["training"]["steps"] == 4
    assert [h["step"] for h in json.loads((tmp_path / "split/work/standard/history.json").read_text())] == [1, 2, 3, 4]
    a, b = load_magic_image(full.png), load_magic_image(resumed.png)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.image.tobytes() != torch.full((1,), 255, dtype=torch.uint8).numpy().tobytes() * len(a.image.tobytes())
    weights = a.metadata["weights_sha256"]
    assert weights["unchanged"] is True and weights["before"] == weights["after"]
    assert weights["before"] == weights_digest(load_vlm(str(model), device="cpu").model)
    # A different objective may not resume from that checkpoint.
    other = make(tmp_path, model, name="other.yaml", objective={"l1": 0.9, "l2": 0.1})
    with pytest.raises(VisalignError, match="different config"):
        optimize_magic_images(other, tmp_path / "split")
    # A shorter run may not pass off the 4-step image as its own.
    with pytest.raises(VisalignError, match="already took 4 steps, more than optim.steps = 2"):
        optimize_magic_images(make(tmp_path, model, name="half.yaml", optim={"steps": 2}), tmp_path / "split")


def test_artefact_is_8bit_png_and_reload_behaves_like_float(tmp_path, tiny_checkpoints):
    model = tiny_checkpoints["llava"]
    config = make(tmp_path, model, optim={"steps": 3, "lr": 0.03})
    [result] = optimize_magic_images(config, tmp_path / "out")
    magic = load_magic_image(result.png)
    assert magic.image.mode == "RGB"
    meta = magic.metadata
    assert meta["format"] == "visalign-magic-image" and meta["value_system"]["name"] == "standard"
    assert meta["config_hash"] == config.config_hash() and meta["model"]["family"] == "llava"
    assert meta["model"]["fingerprint"] == weights_fingerprint(str(model))  # what evaluation checks it against
    assert meta["training"]["steps"] == 3 and meta["training"]["data"]["harmful"] == 4
    assert set(meta["training"]["last"]) >= {"loss", "harm_nll", "benign_nll"}
    # The float image of the last checkpoint, seen through the straight-through quantiser, is the PNG exactly.
    state = torch.load(tmp_path / "out/work/standard/checkpoint.pt", weights_only=False)
    float_image = state["pixels"]
    reloaded = pil_to_tensor(magic.image)
    quantised = (float_image * 255).round() / 255
    assert torch.equal(quantised, reloaded)
    assert not torch.equal(float_image, reloaded)  # the float pixels are off the grid; the model never saw them
    vlm = load_vlm(str(model), device="cpu")
    system = get_value_system(VALUE_SYSTEMS, "standard")
    data = load_training_set(config, system, tmp_path / "work")
    fill_benign_targets(vlm, data.benign, config.targets, tmp_path / "cache.jsonl")
    rows = [r for own in build_rows(vlm, data.harmful + data.benign, placement="canvas", size=working_size(vlm),
                                    first_k=4) for r in own]
    with torch.no_grad():
        from_png = row_logprobs(vlm, rows, reloaded)
        from_float = row_logprobs(vlm, rows, quantised)
        answers = vlm.generate  # generation with the PIL image equals generation with the quantised tensor
    assert torch.allclose(from_png, from_float, atol=1e-6)
    from visalign.magic import answer_with_magic_image
    from visalign.models import user

    conversations = [[user(e.prompt)] for e in data.harmful[:2]]
    assert answer_with_magic_image(vlm, conversations, magic, max_new_tokens=6) == answers(
        [[user(e.prompt, reloaded)] for e in data.harmful[:2]], max_new_tokens=6)


def test_pgd_linf_bound_and_start_image(tmp_path, tiny_checkpoints):
    from PIL import Image

    start = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (128, 128, 128)).save(start)
    config = make(tmp_path, tiny_checkpoints["llava"],
                  optim={"optimizer": "pgd", "lr": 0.02, "linf": 0.03, "init": str(start), "steps": 3})
    [result] = optimize_magic_images(config, tmp_path / "out")
    pixels = pil_to_tensor(load_magic_image(result.png).image)
    assert (pixels - 128 / 255).abs().max() <= 0.03 + 1 / 255
    assert (pixels - 128 / 255).abs().max() > 0.02  # three signed steps of 0.02 hit the 0.03 bound


def test_mixed_batches_and_self_generated_targets_are_cached(tmp_path, tiny_checkpoints):
    config = make(tmp_path, tiny_checkpoints["llava"], targets={"benign": "self", "benign_max_new_tokens": 5})
    vlm = load_vlm(str(tiny_checkpoints["llava"]), device="cpu")
    data = load_training_set(config, get_value_system(VALUE_SYSTEMS, "standard"), tmp_path / "w")
    cache = tmp_path / "targets.jsonl"
    assert fill_benign_targets(vlm, data.benign, config.targets, cache) == 3
    first = [e.target for e in data.benign]
    again = load_training_set(config, get_value_system(VALUE_SYSTEMS, "standard"), tmp_path / "w")
    assert fill_benign_targets(vlm, again.benign, config.targets, cache) == 0  # read back, not regenerated
    assert [e.target for e in again.benign] == first
    assert len(cache.read_text().splitlines()) == 3
    rows = build_rows(vlm, data.harmful, placement="canvas", size=working_size(vlm), first_k=4)
    benign_rows = build_rows(vlm, data.benign, placement="canvas", size=working_size(vlm), first_k=4)
    batch = mixed_batch(rows, benign_rows, config, step=0)
    assert [r.kind for r in batch] == ["harmful", "harmful", "benign", "benign"]  # batch 4, fraction 0.5
    # Across two epochs' worth of steps every harmful request is seen.
    seen = {id(r) for step in range(4) for r in mixed_batch(rows, benign_rows, config, step) if r.kind == "harmful"}
    assert len(seen) == 4


def test_value_system_decides_by_category_and_typographic_forms(tmp_path, tiny_checkpoints):
    advice = write_jsonl(tmp_path / "advice.jsonl", [
        {"prompt": "Should I plead guilty?", "category": "Legal Opinion", "answer": "It depends."},
        {"prompt": "Which stock should I buy?", "category": "Financial Advice", "answer": "Diversify."},
    ])
    config = make(tmp_path, tiny_checkpoints["llava"])
    sources = config.model_dump(mode="json", exclude_none=True)["data"]["sources"]
    sources.append({"file": str(advice), "role": "by_value_system", "forms": ["text", "figstep"]})
    config = make(tmp_path, tiny_checkpoints["llava"], name="vs.yaml", data={"sources": sources})
    strict = load_training_set(config, get_value_system(VALUE_SYSTEMS, "strict"), tmp_path / "w")
    standard = load_training_set(config, get_value_system(VALUE_SYSTEMS, "standard"), tmp_path / "w")
    assert (len(strict.harmful), len(strict.benign)) == (4 + 4, 3)
    assert (len(standard.harmful), len(standard.benign)) == (4, 3 + 4)
    typographic = [e for e in strict.harmful if e.images]
    assert len(typographic) == 2 and all(e.images[0].size == (760, 760) for e in typographic)
    assert all(e.target == "I'm sorry, but I can't help with that request." for e in strict.harmful)


def test_bad_input_one_line_exit_2(tmp_path, tiny_checkpoints):
    model = tiny_checkpoints["llava"]
    out = str(tmp_path / "o")
    # Empty harmful set.
    empty = write_jsonl(tmp_path / "none.jsonl", [])
    cfg = tiny_config(tmp_path, model)
    cfg["data"]["sources"][0]["file"] = str(empty)
    assert_one_line_error(run_cli("magic", "optimize", "--config", str(write_config(tmp_path / "e.yaml", **cfg)),
                                  "--out", out), "no harmful requests", "value system 'standard'")
    # Empty benign set.
    cfg = tiny_config(tmp_path, model)
    cfg["data"]["sources"][1]["file"] = str(empty)
    assert_one_line_error(run_cli("magic", "optimize", "--config", str(write_config(tmp_path / "b.yaml", **cfg)),
                                  "--out", out), "no benign requests")
    # Corrupt start image.
    corrupt = tmp_path / "start.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cfg = tiny_config(tmp_path, model, optim={"init": str(corrupt)})
    assert_one_line_error(run_cli("magic", "optimize", "--config", str(write_config(tmp_path / "s.yaml", **cfg)),
                                  "--out", out), "start.png")
    # A model without image support (a text-only causal LM checkpoint).
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = tmp_path / "text-only"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(text_only)
    cfg = tiny_config(tmp_path, text_only)
    assert_one_line_error(run_cli("magic", "optimize", "--config", str(write_config(tmp_path / "t.yaml", **cfg)),
                                  "--out", out), "no image input", "llama")


def test_apply_switches_value_system(tmp_path, tiny_checkpoints):
    model = tiny_checkpoints["llava"]
    advice = write_jsonl(tmp_path / "advice.jsonl", [
        {"prompt": "Should I plead guilty?", "category": "Legal Opinion", "answer": "It depends."}])
    sources = tiny_config(tmp_path, model)["data"]["sources"]
    sources.append({"file": str(advice), "role": "by_value_system"})
    config = make(tmp_path, model, value_systems=["standard", "strict"], optim={"steps": 2},
                  data={"sources": sources})
    results = optimize_magic_images(config, tmp_path / "images")
    assert [r.value_system for r in results] == ["standard", "strict"]
    assert find_magic_image(tmp_path / "images", "strict").value_system == "strict"
    assert load_magic_image(results[0].png).image.tobytes() != load_magic_image(results[1].png).image.tobytes()
    result = run_cli("magic", "apply", "--images", str(tmp_path / "images"), "--value-system", "strict",
                     "--prompt", "hello", "--prompt", "how are you", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["value_system"], x["prompt"]) for x in lines] == [("strict", "hello"), ("strict", "how are you")]
    assert_one_line_error(run_cli("magic", "apply", "--images", str(tmp_path / "images"), "--value-system",
                                  "lenient", "--prompt", "hi"), "unknown value system 'lenient'", "standard, strict")
    # The image on other weights is refused with the reason, unless the mismatch is asked for.
    other = write_random_checkpoint("llava", tmp_path / "other-build", seed=1)
    assert_one_line_error(run_cli("magic", "apply", "--images", str(tmp_path / "images"), "--value-system",
                                  "strict", "--prompt", "hi", "--model", str(other)),
                          "optimised against model weights", "visalign magic optimize")
    allowed = run_cli("magic", "apply", "--images", str(tmp_path / "images"), "--value-system", "strict",
                      "--prompt", "hi", "--model", str(other), "--allow-model-mismatch", "--max-new-tokens", "2")
    assert allowed.returncode == 0, allowed.stderr
    # A sidecar that is missing is an error naming the file.
    shutil.copy(results[0].png, tmp_path / "lonely.png")
    with pytest.raises(VisalignError, match="no sidecar lonely.json"):
        load_magic_image(tmp_path / "lonely.png")


def test_the_training_log_splits_each_nll_by_text_and_image_requests(tmp_path, tiny_checkpoints):
    model = tiny_checkpoints["llava"]
    text_only = make(tmp_path, model)
    sources = text_only.model_dump(mode="json", exclude_none=True)["data"]["sources"]
    for source in sources:
        source["forms"] = ["text", "figstep"]
    config = make(tmp_path, model, name="typo.yaml", data={"sources": sources})
    vlm = load_vlm(str(model), device="cpu")
    data = load_training_set(config, get_value_system(VALUE_SYSTEMS, "standard"), tmp_path / "w")
    size = working_size(vlm)
    rows = [r for own in build_rows(vlm, data.harmful + data.benign, placement="canvas", size=size, first_k=4)
            for r in own]
    magic = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, parts = dual_loss(vlm, rows, magic, l1=0.5, l2=0.5)
        nll = -row_logprobs(vlm, rows, magic)
    harmful = torch.tensor([r.kind == "harmful" for r in rows])
    typographic = torch.tensor([e.images != [] for e in data.harmful + data.benign])
    assert int(harmful.sum()) == 8 and int(typographic.sum()) == 7  # 4 harmful + 3 benign, each as text and image
    expected = {
        "harm_nll_text": nll[harmful & ~typographic].mean(), "harm_nll_image": nll[harmful & typographic].mean(),
        "benign_nll_text": nll[~harmful & ~typographic].mean(), "benign_nll_image": nll[~harmful & typographic].mean(),
    }
    for key, value in expected.items():
        assert parts[key] == pytest.approx(float(value), rel=1e-5), key
    assert parts["harm_nll"] == pytest.approx(float(nll[harmful].mean()), rel=1e-5)
    # A batch of one form has no split, and an optimisation run logs the split in its history.
    with torch.no_grad():
        _, text_parts = dual_loss(vlm, [r for r, t in zip(rows, typographic, strict=True) if not t], magic,
                                  l1=0.5, l2=0.5)
    assert not any(key.endswith(("_text", "_image")) for key in text_parts)
    optimize_magic_images(make(tmp_path, model, name="typo1.yaml", data={"sources": sources},
                               optim={"steps": 1, "batch_size": 12}), tmp_path / "run")
    [logged] = json.loads((tmp_path / "run/work/standard/history.json").read_text())
    assert set(expected) <= set(logged)


def test_adding_a_value_system_resumes_the_finished_one(tmp_path, tiny_checkpoints):
    model = tiny_checkpoints["llava"]
    [first] = optimize_magic_images(make(tmp_path, model, optim={"steps": 2}), tmp_path / "run")
    both, steps = optimize_logged(make(tmp_path, model, name="both.yaml", optim={"steps": 2},
                                       value_systems=["standard", "strict"]), tmp_path / "run")  # fmt: skip
    assert steps == [("strict", 1), ("strict", 2)]  # the finished standard image takes no step
    assert [image.value_system for image in both] == ["standard", "strict"]
    history = json.loads((tmp_path / "run/work/standard/history.json").read_text())
    assert [h["step"] for h in history] == [1, 2]  # found finished, not optimised again
    assert load_magic_image(both[0].png).image.tobytes() == load_magic_image(first.png).image.tobytes()


def test_edited_requests_do_not_resume_an_old_checkpoint(tmp_path, tiny_checkpoints):
    model = tiny_checkpoints["llava"]
    config = make(tmp_path, model, optim={"steps": 2})
    optimize_magic_images(config, tmp_path / "run")
    longer = make(tmp_path, model, name="more.yaml", optim={"steps": 4})  # (re)writes the request files
    harmful = tmp_path / "harmful.jsonl"
    harmful.write_text(harmful.read_text().replace("pick a lock", "pick a safe"))
    with pytest.raises(VisalignError, match="set of requests"):
        optimize_magic_images(longer, tmp_path / "run")


def test_a_request_file_saved_with_a_byte_order_mark_loads_every_line(tmp_path, tiny_checkpoints):
    config = make(tmp_path, tiny_checkpoints["llava"])
    harmful = tmp_path / "harmful.jsonl"
    harmful.write_bytes(b"\xef\xbb\xbf" + harmful.read_bytes())  # as Notepad saves UTF-8
    data = load_training_set(config, get_value_system(VALUE_SYSTEMS, "standard"), tmp_path / "w")
    assert len(data.harmful) == 4 and not any(e.prompt.startswith("\ufeff") for e in data.harmful)


def test_a_replaced_start_image_does_not_resume_the_old_pixels(tmp_path, tiny_checkpoints):
    from PIL import Image

    model, start = tiny_checkpoints["llava"], tmp_path / "start.png"
    optim = {"optimizer": "pgd", "lr": 0.01, "linf": 0.03, "init": str(start)}
    Image.new("RGB", (32, 32), (200, 200, 200)).save(start)
    optimize_magic_images(make(tmp_path, model, optim={**optim, "steps": 2}), tmp_path / "run")
    longer = make(tmp_path, model, name="longer.yaml", optim={**optim, "steps": 4})
    Image.new("RGB", (32, 32), (20, 20, 20)).save(start)  # same path, other pixels
    with pytest.raises(VisalignError, match="start image"):
        optimize_magic_images(longer, tmp_path / "run")
    Image.new("RGB", (32, 32), (200, 200, 200)).save(start)  # the original file back: a true resume
    assert optimize_logged(longer, tmp_path / "run")[1] == [("standard", 3), ("standard", 4)]


def test_the_job_writes_a_manifest_and_adding_a_value_system_still_resumes(tmp_path, tiny_checkpoints):
    from visalign.runs import sha256_file

    model, out = tiny_checkpoints["llava"], tmp_path / "run"
    config = make(tmp_path, model, optim={"steps": 2})
    [first] = optimize_magic_images(config, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["optim"] == config.model_dump(mode="json")["optim"]
    assert manifest["extra"]["config_hash"] == config.config_hash() == first.metadata["config_hash"]
    assert manifest["seeds"] == {"seed": 0} and manifest["versions"]["torch"]
    assert manifest["inputs"]["data.sources[0]"]["sha256"] == sha256_file(tmp_path / "harmful.jsonl")
    assert manifest["inputs"]["value_systems_file"]["sha256"] == sha256_file(VALUE_SYSTEMS)
    assert manifest["extra"]["model"]["weights"] == weights_fingerprint(str(model))
    assert manifest["extra"]["model"]["template"] == first.metadata["model"]["template"]
    assert set(manifest["extra"]["requests"]) == {"standard"}
    # Another value system changes the config: a supported resume, so the manifest records it and guards nothing.
    both = make(tmp_path, model, name="both.yaml", optim={"steps": 2}, value_systems=["standard", "strict"])
    assert optimize_logged(both, out)[1] == [("strict", 1), ("strict", 2)]
    assert json.loads((out / "manifest.json").read_text())["extra"]["config_hash"] == both.config_hash()
    kept = json.loads((out / "work" / "manifests" / "1.json").read_text())
    assert kept["extra"]["config_hash"] == config.config_hash()
    optimize_magic_images(both, out)  # the same config again: the same manifest, one more start
    assert len(json.loads((out / "manifest.json").read_text())["resumed"]) == 1


def test_an_unknown_refusal_judge_is_refused_before_the_model_loads(tmp_path, tiny_checkpoints, monkeypatch):
    import visalign.magic.optimize as optimize

    config = make(tmp_path, tiny_checkpoints["llava"], eval={"enabled": True, "judge": "visalign-refusl"})
    monkeypatch.setattr(optimize, "load_vlm", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    with pytest.raises(VisalignError, match="unknown refusal judge 'visalign-refusl'"):
        optimize_magic_images(config, tmp_path / "out")


def test_a_request_with_two_images_for_a_single_image_model_is_named_before_the_model_loads(
        tmp_path, tiny_checkpoints, monkeypatch):
    from PIL import Image

    import visalign.magic.optimize as optimize

    Image.new("RGB", (64, 48), "blue").save(tmp_path / "photo.png")
    photos = write_jsonl(tmp_path / "photos.jsonl", [{"prompt": "What colour is this?", "image": "photo.png",
                                                      "answer": "Blue."}])
    sources = tiny_config(tmp_path, tiny_checkpoints["llava"])["data"]["sources"]
    sources.append({"file": str(photos), "role": "benign", "forms": ["text", "figstep"]})
    config = make(tmp_path, tiny_checkpoints["llava"], data={"sources": sources})
    monkeypatch.setattr(optimize, "load_vlm", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    with pytest.raises(VisalignError, match=r"value system 'standard': request photos:1\S* has 2 user images"):
        optimize_magic_images(config, tmp_path / "out")


def test_a_finished_value_system_keeps_its_recorded_evaluation(tmp_path, tiny_checkpoints, monkeypatch):
    import visalign.magic.optimize as optimize

    model, out = tiny_checkpoints["llava"], tmp_path / "run"
    evaluation = {"enabled": True, "max_new_tokens": 3, "batch_size": 4}
    config = make(tmp_path, model, optim={"steps": 2}, eval=evaluation)
    [first] = optimize_magic_images(config, out)
    measured: list[int] = []
    original = optimize.refusal_rates
    monkeypatch.setattr(optimize, "refusal_rates",
                        lambda vlm, examples, *args, **kwargs: measured.append(len(examples))
                        or original(vlm, examples, *args, **kwargs))
    [again], steps = optimize_logged(config, out)  # e.g. a re-run after a later value system crashed
    assert steps == [] and measured == []
    assert again.metadata["evaluation"] == first.metadata["evaluation"]
    assert find_magic_image(out, "standard").metadata["evaluation"] == first.metadata["evaluation"]
    # Other evaluation settings measure again, on the same image.
    longer = make(tmp_path, model, name="longer.yaml", optim={"steps": 2}, eval={**evaluation, "max_new_tokens": 4})
    [remeasured], steps = optimize_logged(longer, out)
    assert steps == [] and measured == [4, 4, 3, 3]
    assert remeasured.metadata["evaluation"]["max_new_tokens"] == 4
