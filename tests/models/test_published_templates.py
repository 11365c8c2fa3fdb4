"""The chat templates published with the LLaVA paper models: training rows still end each answer with EOS.

llava-hf/llava-1.5-7b-hf closes an assistant turn with a space (no ``</s>``); llava-hf/llava-v1.6-mistral-7b-hf
closes it with the literal text ``<\\s>`` (an upstream typo). Training must label the end-of-sequence token that
generation stops on, and never train the typo as text; prompts stay exactly as the published template renders them.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_adapters import _labelled_runs

from visalign.models import assistant, load_vlm, user
from visalign.models.adapter import render_conversation

# The chat_template.json texts of llava-hf/llava-1.5-7b-hf and llava-hf/llava-v1.6-mistral-7b-hf, verbatim.
LLAVA15_PUBLISHED = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAVA16_MISTRAL_PUBLISHED = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '<\\\\s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
PUBLISHED = {"llava": LLAVA15_PUBLISHED, "llava_next": LLAVA16_MISTRAL_PUBLISHED}
TYPO = "<\\s>"  # what the LLaVA-v1.6-Mistral template renders after each answer


def _image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=sorted(PUBLISHED))
def published(request, tiny_checkpoints, tmp_path_factory):
    """A tiny checkpoint of the family carrying the template published with the paper's model."""
    family = request.param
    folder = tmp_path_factory.mktemp("published") / family
    shutil.copytree(tiny_checkpoints[family], folder)
    (folder / "chat_template.jinja").write_text(PUBLISHED[family])
    return family, load_vlm(str(folder))


def test_each_answer_is_trained_to_end_with_eos(published):
    family, vlm = published
    rendered = vlm.render([user("What is it?"), assistant("A red car.")], add_generation_prompt=False)
    assert rendered.endswith({"llava": "A red car. ", "llava_next": f"A red car.{TYPO} "}[family])  # as published
    eos = vlm.tokenizer.eos_token_id
    conversations = [
        [user("What is it?", _image()), assistant("A red car.")],
        [user("Describe it.", _image(1)), assistant("Two cats."), user("And colours?"), assistant("Grey.")],
    ]
    batch = vlm.training_inputs(conversations)
    for row, answers in zip(range(2), (["A red car."], ["Two cats.", "Grey."]), strict=True):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        runs = _labelled_runs(labels)
        assert len(runs) == len(answers)
        for (start, stop), answer in zip(runs, answers, strict=True):
            assert int(labels[stop - 1]) == eos  # the token generate() stops on is a target
            assert vlm.tokenizer.decode(ids[start:stop]).strip() == f"{answer}{vlm.tokenizer.eos_token}"
        mask = batch["attention_mask"][row].bool()
        assert TYPO not in vlm.tokenizer.decode(ids[mask])  # the typo is neither trained nor seen as text
        assert eos in vlm._stop_token_ids().tolist()
    assert vlm.loss(batch).isfinite()

    # prompts stay exactly as the published template renders them (the typo included): only training rows change
    image = _image(1)
    history = [user("Describe it.", image), assistant("Two cats."), user("And colours?")]
    prompt = render_conversation(vlm.processor, history, add_generation_prompt=True)
    expected = vlm.processor(text=[prompt], images=[image], return_tensors="pt")["input_ids"]
    assert torch.equal(vlm.chat_inputs([history])["input_ids"].cpu(), expected)
    assert (TYPO in prompt) == (family == "llava_next")
