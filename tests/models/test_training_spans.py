"""Training rows locate each assistant turn even where a real BPE tokenizer merges tokens across a turn's edges.

The tiny checkpoints' toy tokenizer has almost no merges, so these tests use the embedded default model's SmolLM2
tokenizer (a GPT-2-style byte-level BPE). Tokenised alone, a turn that the published LLaVA-1.5 and
LLaVA-v1.6-Mistral templates close with a space keeps that space as its own token; in the full row it merges with
the next turn's first word (`` USER``, `` [``). And the generation prompt's closing newline merges with an answer's
leading whitespace (``"\\n  "``). Neither may stop a row from being built, or label anything but the answer.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from test_adapters import _labelled_runs
from test_published_templates import LLAVA15_PUBLISHED, LLAVA16_MISTRAL_PUBLISHED

from visalign.errors import VisalignError
from visalign.models import Turn, assistant, load_vlm, user

PUBLISHED = {"llava-1.5": LLAVA15_PUBLISHED, "llava-1.6-mistral": LLAVA16_MISTRAL_PUBLISHED}
ANSWERS = ["A red car.", "It is parked by the door.", "Two, I think.", "No."]
CHATML_GENERATION_PROMPT = "<|im_start|>assistant\n"  # how the default model's own template opens an answer


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def default_vlm(default_model_dir):
    return load_vlm(str(default_model_dir))


def _with_template(vlm, template: str):
    """The same model and tokenizer behind another chat template (the processor is copied, not changed)."""
    processor = copy.copy(vlm.processor)
    processor.chat_template = template
    return dataclasses.replace(vlm, processor=processor)


def _row(vlm, conversation):
    batch = vlm.training_inputs([conversation])
    return batch, batch["input_ids"][0], batch["labels"][0]


@pytest.mark.parametrize("turns", [2, 4])
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_multi_turn_rows_build_with_the_published_llava_templates(default_vlm, name, turns):
    vlm = _with_template(default_vlm, PUBLISHED[name])
    image = _image()
    conversation = [Turn("system", "You are a careful assistant.")] if turns == 4 else []
    for index, answer in enumerate(ANSWERS[:turns]):
        conversation += [user(f"Question {index + 1}?", *([image] if index == 0 else [])), assistant(answer)]
    batch, ids, labels = _row(vlm, conversation)

    eos = vlm.tokenizer.eos_token
    runs = _labelled_runs(labels)
    # both templates put one space before the answer; each turn is trained to end with the token generation stops on
    assert [vlm.tokenizer.decode(ids[start:stop]) for start, stop in runs] == [f" {a}{eos}" for a in ANSWERS[:turns]]
    labelled = labels != -100
    assert torch.equal(labels[labelled], ids[labelled])

    # the row is the template's own rendering, plus the end-of-sequence token after each answer where LLaVA-1.5's
    # template leaves the turn open (v1.6-Mistral's closes it, with <\s> rewritten to the tokenizer's own)
    rendered = vlm._render_training(conversation, add_generation_prompt=False)
    expected = vlm.processor(text=[rendered], images=[image], return_tensors="pt")["input_ids"][0]
    inserted = {stop - 1 for _, stop in runs} if name == "llava-1.5" else set()
    kept = torch.tensor([i for i in range(len(ids)) if i not in inserted])
    assert torch.equal(ids[kept].cpu(), expected)
    assert vlm.loss(batch).isfinite()


@pytest.mark.parametrize(
    "answer",
    ["  Sure.", "\n\nSure.", "    def f():\n        return 1", "\tTabbed.", "  "],
    ids=["two-spaces", "two-newlines", "indented-code", "tab", "whitespace-only"],
)
def test_an_answer_that_begins_with_whitespace_is_labelled_whole(default_vlm, answer):
    image = _image()
    conversation = [user("Show me.", image), assistant(answer), user("Again."), assistant(answer)]
    _, ids, labels = _row(default_vlm, conversation)

    eos = default_vlm.tokenizer.eos_token
    runs = _labelled_runs(labels)
    assert len(runs) == 2
    for start, stop in runs:
        decoded = default_vlm.tokenizer.decode(ids[start:stop])
        # the answer and its end of turn, led at most by the prompt's own newline that the tokenizer merged into
        # the answer's first token (a token cannot be half labelled)
        assert decoded.endswith(answer + eos)
        assert CHATML_GENERATION_PROMPT.endswith(decoded[: -len(answer + eos)])
    # the template closes each turn with <|im_end|> itself: nothing is inserted
    rendered = default_vlm.render(conversation, add_generation_prompt=False)
    expected = default_vlm.processor(text=[rendered], images=[image], return_tensors="pt")["input_ids"][0]
    assert torch.equal(ids.cpu(), expected)


def test_a_template_that_renders_earlier_turns_differently_is_refused(default_vlm):
    # the first line counts the messages, so a shorter conversation is not a prefix of a longer one
    vlm = _with_template(default_vlm, "{{ messages | length }} messages\n" + default_vlm.processor.chat_template)
    with pytest.raises(VisalignError, match="does not render conversations as prefixes of each other"):
        vlm.training_inputs([[user("Hi"), assistant("Hello.")]])
