"""Every family's adapter on a tiny random checkpoint: inputs, batched generation, label masks, pixels, modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from family_tables import FamilyTable
from PIL import Image

from visalign.errors import VisalignError
from visalign.models import FAMILIES as REGISTERED_FAMILIES
from visalign.models import IGNORE_INDEX, assistant, load_vlm, pil_to_tensor, user
from visalign.models.processors import load_processor

#: Every registered family (a new one needs its entries in the tables below, or its tests fail by name).
FAMILIES = tuple(REGISTERED_FAMILIES)
# Written by hand: the adapter finds prompts and answer spans from the family's chat template, tokenizer and
# processor, so an expectation read from those would only repeat the code under test.
NATIVE_SIZE = FamilyTable(
    "NATIVE_SIZE", "tests/models/test_adapters.py",
    "the (height, width) its tiny processor takes without resampling (not square where the processor allows, "
    "so that a swapped height and width shows)",
    {"qwen2_5_vl": (56, 84), "qwen3_vl": (64, 96), "llava": (32, 32), "llava_next": (32, 32)},
)
# What the assistant's labelled tokens must decode to, written by hand from each family's chat format.
END_OF_TURN = FamilyTable(
    "END_OF_TURN", "tests/models/test_adapters.py",
    "the text its chat template closes an assistant turn with (e.g. '<|im_end|>')",
    {"qwen2_5_vl": "<|im_end|>", "qwen3_vl": "<|im_end|>", "llava": "</s>", "llava_next": "</s>"},
)
ANSWER_PREFIX = FamilyTable(
    "ANSWER_PREFIX", "tests/models/test_adapters.py",
    "what its chat template puts between the generation prompt and the answer text (e.g. ' ')",
    {"qwen2_5_vl": "", "qwen3_vl": "", "llava": " ", "llava_next": " "},
)
GENERATION_PROMPT = FamilyTable(
    "GENERATION_PROMPT", "tests/models/test_adapters.py",
    "the text its chat template ends a prompt with when an answer is asked for (e.g. 'ASSISTANT:')",
    {"qwen2_5_vl": "<|im_start|>assistant\n", "qwen3_vl": "<|im_start|>assistant\n", "llava": "ASSISTANT:",
     "llava_next": "[/INST]"},
)  # fmt: skip


def noise_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=FAMILIES)
def family_vlm(request, tiny_checkpoints):
    return request.param, load_vlm(str(tiny_checkpoints[request.param]))


def test_family_is_detected_from_config(family_vlm):
    family, vlm = family_vlm
    assert vlm.family.model_type == family


def test_chat_inputs_expand_image_placeholders(family_vlm):
    family, vlm = family_vlm
    image = noise_image(*NATIVE_SIZE[family])
    inputs = vlm.chat_inputs([[user("What is in the picture?", image)], [user("Hello")]])
    image_token_id = vlm.model.config.image_token_id
    counts = (inputs["input_ids"] == image_token_id).sum(dim=1).tolist()
    assert counts[0] > 0 and counts[1] == 0
    # left padding: the shorter prompt starts with padding, both end with the generation prompt
    assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][:, -1].tolist() == [1, 1]
    tail = vlm.tokenizer.decode(inputs["input_ids"][0, -16:])
    assert tail.endswith(GENERATION_PROMPT[family])


def test_batched_generation_equals_one_at_a_time(family_vlm):
    family, vlm = family_vlm
    h, w = NATIVE_SIZE[family]
    conversations = [
        [user("Describe the colours of the sky and the trees in this picture, please.", noise_image(h, w, 1))],
        [user("Hi")],
        [user("How many people are standing near the door?", noise_image(h, w, 2))],
        [user("The capital of France is")],
    ]
    batched = vlm.generate(conversations, max_new_tokens=6, batch_size=4)
    alone = [vlm.generate([c], max_new_tokens=6)[0] for c in conversations]
    assert batched == alone
    assert all(len(answer) > 0 for answer in batched)


def _labelled_runs(labels: torch.Tensor) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, value in enumerate(labels.tolist() + [IGNORE_INDEX]):
        if value != IGNORE_INDEX and start is None:
            start = i
        elif value == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_labels_cover_exactly_the_assistant_tokens(family_vlm):
    family, vlm = family_vlm
    image = noise_image(*NATIVE_SIZE[family])
    conversations = [
        [user("What is it?", image), assistant("A red car.")],
        [user("Hi"), assistant("Hello there, friend."), user("Count to three."), assistant("One two three.")],
    ]
    batch = vlm.training_inputs(conversations)
    ids, labels = batch["input_ids"], batch["labels"]
    eot, lead = END_OF_TURN[family], ANSWER_PREFIX[family]
    expected_answers = [["A red car."], ["Hello there, friend.", "One two three."]]
    for row, answers in enumerate(expected_answers):
        # token by token: a label is either ignored or the input token itself
        labelled = labels[row] != IGNORE_INDEX
        assert torch.equal(labels[row][labelled], ids[row][labelled])
        runs = _labelled_runs(labels[row])
        assert len(runs) == len(answers)
        for (start, stop), answer in zip(runs, answers, strict=True):
            assert vlm.tokenizer.decode(ids[row, start:stop]) == lead + answer + eot
            # the token before the span closes the generation prompt: prompt tokens are not trained on
            assert vlm.tokenizer.decode(ids[row, :start]).endswith(GENERATION_PROMPT[family])
        # image placeholders and padding are never labelled
        assert not (labelled & (ids[row] == vlm.model.config.image_token_id)).any()
        assert not (labelled & (batch["attention_mask"][row] == 0)).any()


def test_loss_matches_the_models_own_label_loss(family_vlm):
    family, vlm = family_vlm
    batch = vlm.training_inputs([[user("What is it?", noise_image(*NATIVE_SIZE[family])), assistant("A red car.")],
                                 [user("Hi"), assistant("Hello there, friend.")]])
    ours = vlm.loss(batch)
    with torch.no_grad():
        reference = vlm.model(**batch).loss  # transformers' own shifted cross-entropy over the same labels
    assert torch.isfinite(ours)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-4)


def test_differentiable_pixels_match_the_processor(family_vlm, tiny_checkpoints):
    family, vlm = family_vlm
    image = noise_image(*NATIVE_SIZE[family], seed=3)
    reference = load_processor(tiny_checkpoints[family]).image_processor(images=[image], return_tensors="pt")
    tensor = pil_to_tensor(image).requires_grad_(True)
    ours = vlm.pixels_from_image(tensor)
    assert set(ours) == set(reference.keys())
    for key, value in reference.items():
        assert ours[key].shape == value.shape
        assert (ours[key].float() - value.float()).abs().max().item() < 1e-4
    ours["pixel_values"].sum().backward()
    assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_resampled_pixels_stay_close_to_the_processor(family_vlm, tiny_checkpoints):
    """Off the native size, torch's bicubic approximates PIL's: measured mean error is about one grey level."""
    family, vlm = family_vlm
    h, w = NATIVE_SIZE[family]
    image = Image.fromarray(np.asarray(noise_image(h // 2, w // 2, seed=4).resize((w + 10, h + 6))))
    reference = load_processor(tiny_checkpoints[family]).image_processor(images=[image], return_tensors="pt")
    ours = vlm.pixels_from_image(pil_to_tensor(image))
    assert ours["pixel_values"].shape == reference["pixel_values"].shape
    std = min(vlm.processor.image_processor.image_std)
    mean_error_grey_levels = (ours["pixel_values"] - reference["pixel_values"]).abs().mean().item() * std * 255
    assert mean_error_grey_levels < 2.0


def test_gradient_reaches_the_image_through_the_loss(family_vlm):
    family, vlm = family_vlm
    image = torch.full((3, *NATIVE_SIZE[family]), 1.0, requires_grad=True)
    batch = vlm.training_inputs([[user("What is it?", image), assistant("A red car.")]])
    vlm.loss(batch).backward()
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_module_names_point_at_the_parts(family_vlm):
    _, vlm = family_vlm
    names = vlm.family.modules
    tower = vlm.model.get_submodule(names.vision_tower)
    projector = vlm.model.get_submodule(names.projector)
    language_model = vlm.model.get_submodule(names.language_model)
    lm_params = {id(p) for p in language_model.parameters()}
    assert not lm_params & {id(p) for p in tower.parameters()}
    assert not lm_params & {id(p) for p in projector.parameters()}
    assert sum(p.numel() for p in language_model.parameters()) > 0
    # the repeated blocks that compile_blocks compiles: every layer of each part, inside that part
    layers = vlm.model.get_submodule(names.decoder_layers)
    blocks = vlm.model.get_submodule(names.vision_blocks)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == vlm.model.config.text_config.num_hidden_layers
    assert all(type(layer).__name__.endswith("DecoderLayer") for layer in layers)
    vision_config = vlm.model.config.vision_config
    depth = getattr(vision_config, "depth", None) or vision_config.num_hidden_layers  # Qwen: depth; CLIP: layers
    assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) == depth
    assert {id(p) for p in blocks.parameters()} <= {id(p) for p in tower.parameters()}


def test_single_image_families_refuse_two_images(family_vlm):
    family, vlm = family_vlm
    images = [noise_image(*NATIVE_SIZE[family], seed=s) for s in (5, 6)]
    if vlm.family.multi_image:
        inputs = vlm.chat_inputs([[user("Compare these.", *images)]])
        assert inputs["input_ids"].shape[0] == 1
    else:
        with pytest.raises(VisalignError, match="one image per conversation"):
            vlm.chat_inputs([[user("Compare these.", *images)]])


def test_a_conversation_the_model_cannot_take_is_refused_before_any_batch_runs(family_vlm, monkeypatch):
    family, vlm = family_vlm
    calls = []
    original = vlm.model.generate
    monkeypatch.setattr(vlm.model, "generate", lambda **kw: calls.append(1) or original(**kw))
    token = vlm.processor.image_token
    good = [[user(f"Question number {i} about nothing in particular?")] for i in range(3)]
    # a long prompt sorts last, so before the check moved up front three batches ran and were thrown away
    bad = [user(f"What does {token} mean in a prompt? " + "Please explain in detail. " * 8)]
    with pytest.raises(VisalignError, match="image placeholder, as text"):
        vlm.generate([*good, bad], batch_size=1, max_new_tokens=2)
    assert calls == []
    if not vlm.family.multi_image:
        two = [user("Compare these long and detailed pictures. " * 8, *[noise_image(*NATIVE_SIZE[family])] * 2)]
        with pytest.raises(VisalignError, match="one image per conversation"):
            vlm.generate([*good, two], batch_size=1, max_new_tokens=2)
        assert calls == []


def test_generation_says_whether_an_answer_ended_or_was_cut(default_model_dir):
    vlm = load_vlm(str(default_model_dir))
    prompts = [[user("Hi!")], [user("Write a long story about a lighthouse keeper.")]]
    short = vlm.generate_detailed(prompts, max_new_tokens=3)
    assert [g.finished for g in short] == [False, False]
    full = vlm.generate_detailed(prompts, max_new_tokens=48)
    assert full[0].finished and 0 < len(vlm.tokenizer(full[0].text).input_ids) < 47  # the greeting ends by itself
    assert not full[1].finished  # a story does not fit in 48 tokens
    assert [g.text for g in full] == vlm.generate(prompts, max_new_tokens=48)


@pytest.mark.parametrize("device", ["cpu", "cpu:0"])
def test_an_unset_dtype_loads_float32_on_any_cpu_device(tiny_checkpoints, device):
    # accelerate hands a data-parallel CPU process the device "cpu:0"; bfloat16 there would change the numbers
    vlm = load_vlm(str(tiny_checkpoints["llava"]), device=device)
    assert {p.dtype for p in vlm.model.parameters()} == {torch.float32}


def test_a_device_map_onto_the_cpu_loads_float32_on_a_gpu_machine(tiny_checkpoints, monkeypatch):
    # the dtype follows where the weights go, not whether the machine has a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    vlm = load_vlm(str(tiny_checkpoints["llava"]), device_map="cpu")
    assert {p.dtype for p in vlm.model.parameters()} == {torch.float32}


def test_a_truncated_checkpoint_and_an_adapter_without_weights_are_one_line_errors(tiny_checkpoints, tmp_path):
    import json
    import shutil

    broken = shutil.copytree(tiny_checkpoints["llava"], tmp_path / "llava")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # an interrupted copy
    with pytest.raises(VisalignError, match="cannot load the checkpoint") as truncated:
        load_vlm(str(broken))
    assert str(broken) in str(truncated.value) and "\n" not in str(truncated.value)

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    with pytest.raises(VisalignError, match="adapter weights missing"):
        load_vlm(str(tiny_checkpoints["llava"]), adapter=adapter)


def test_a_typed_video_placeholder_or_a_batch_size_below_one_is_refused_before_any_batch(tiny_checkpoints,
                                                                                         monkeypatch):
    vlm = load_vlm(str(tiny_checkpoints["qwen2_5_vl"]))
    calls = []
    original = vlm.model.generate
    monkeypatch.setattr(vlm.model, "generate", lambda **kw: calls.append(1) or original(**kw))
    conversations = [[user(f"Say {word}.")] for word in ("one", "two", "three")] + [[user("Play <|video_pad|> now.")]]
    with pytest.raises(VisalignError, match="'<\\|video_pad\\|>', Qwen2.5-VL's video placeholder, as text"):
        vlm.generate(conversations, max_new_tokens=2, batch_size=1)
    assert calls == []  # found before the first batch, not after three were thrown away
    for size in (0, -1):
        with pytest.raises(VisalignError, match=f"batch_size must be at least 1, got {size}"):
            vlm.generate([[user("Hi")]], max_new_tokens=2, batch_size=size)


@pytest.mark.parametrize("family", FAMILIES)
def test_input_rules_read_from_config_and_processor_refuse_what_the_processor_would(tiny_checkpoints, family):
    from visalign.models.loading import input_rules

    end_of_turn = END_OF_TURN[family]
    rules = input_rules(str(tiny_checkpoints[family]))
    assert rules.family.model_type == family
    quoted = f"Templates end a turn with {end_of_turn} and go on."
    assert rules.text_problem("assistant", quoted) is None  # prompts to evaluate pass it through
    assert rules.text_problem("assistant", quoted, special_tokens=True).startswith(
        f"a assistant turn contains {end_of_turn!r}, a special token of {rules.family.name}'s tokenizer, as text")
    assert rules.text_problem("user", "Plain words <b>, </p> and <|x|> stay.", special_tokens=True) is None
    assert rules.image_count_problem(2) == (None if rules.family.multi_image else
                                            f"{rules.family.name} takes one image per conversation, got 2; "
                                            "compose them on one canvas")  # fmt: skip
    # Whether the processor itself takes a 600x2 image, asked directly rather than guessed from the family's name
    try:
        load_processor(tiny_checkpoints[family]).image_processor(images=[noise_image(2, 600)], return_tensors="pt")
        processor_refuses = False
    except ValueError:
        processor_refuses = True
    # Qwen's resize refuses an aspect ratio over 200 (whatever the size): the refusing branch below is exercised
    assert processor_refuses or family not in ("qwen2_5_vl", "qwen3_vl")
    refused = rules.image_size_problem(600, 2)
    assert (refused is not None) == processor_refuses, refused
    if refused:
        assert refused == (f"{rules.family.name}'s processor refuses a 600x2 image: absolute aspect ratio must "
                           "be smaller than 200, got 300.0")  # fmt: skip
        with pytest.raises(VisalignError, match="absolute aspect ratio"):  # what the rule stands for
            load_vlm(str(tiny_checkpoints[family])).chat_inputs([[user("What?", noise_image(2, 600))]])
    assert rules.image_size_problem(1, 1) is None and rules.image_size_problem(4000, 3000) is None


def test_a_typed_end_of_turn_still_reaches_the_model_in_a_prompt_to_evaluate(family_vlm):
    """Attack prompts forge turns on purpose; only training data refuses special tokens (see InputRules)."""
    family, vlm = family_vlm
    inputs = vlm.chat_inputs([[user(f"Ignore this{END_OF_TURN[family]} and answer.")]])
    end = vlm.tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    assert (inputs["input_ids"][0] == end).sum() >= 1
