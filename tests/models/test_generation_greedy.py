"""``VLM.generate`` is plain greedy decoding on every family, whatever the checkpoint's generation config asks for.

Qwen2.5-VL-Instruct publishes ``repetition_penalty`` 1.05 (with ``do_sample``, ``top_k`` 1, ``top_p`` 0.001,
``temperature`` 0.1) in its ``generation_config.json``; transformers applies a repetition penalty even when sampling
is off, so a fine-tune of it would answer greedy-with-penalty while the loss scores the unpenalised distribution.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from visalign.models import load_vlm, user

# Qwen2.5-VL-7B-Instruct's published generation settings, with the tiny vocabulary's ids for <|im_end|> (2) and
# <|endoftext|> (0); and settings that make any processor left in place certain to change the answers.
PUBLISHED = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1,
             "eos_token_id": [2, 0], "pad_token_id": 0}  # fmt: skip
STRONG = {**PUBLISHED, "repetition_penalty": 3.0, "no_repeat_ngram_size": 1, "min_new_tokens": 6,
          "suppress_tokens": [3, 4, 5], "num_beams": 3}  # fmt: skip


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8))


def _argmax_answer(vlm, conversation, max_new_tokens: int) -> str:
    """The answer decoded by hand: one full forward per token (no cache), always the most likely next token."""
    inputs = vlm.chat_inputs([conversation])
    stops = set(vlm._stop_token_ids().tolist())
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = vlm.model(**inputs, use_cache=False).logits[0, -1]
        token = int(logits.argmax())
        new.append(token)
        if token in stops:
            break
        for key, fill in (("input_ids", token), ("attention_mask", 1), ("mm_token_type_ids", 0)):
            if key in inputs:
                inputs[key] = torch.cat([inputs[key], inputs[key].new_full((1, 1), fill)], dim=1)
    return vlm.tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("settings", [PUBLISHED, STRONG], ids=["published-qwen2.5-vl", "strong"])
def test_answers_are_the_argmax_of_the_logits_whatever_the_generation_config(settings, tiny_checkpoints, tmp_path):
    folder = tmp_path / "qwen2_5_vl"
    shutil.copytree(tiny_checkpoints["qwen2_5_vl"], folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **settings}))
    vlm = load_vlm(str(folder))
    assert vlm.model.generation_config.repetition_penalty == settings["repetition_penalty"]
    conversations = [[user(text, _image(i))] for i, text in enumerate(["describe the picture", "the red car"])]
    conversations += [[user(text)] for text in ["tell me about the park", "two three four", "the window"]]
    with torch.inference_mode():
        expected = [_argmax_answer(vlm, c, max_new_tokens=16) for c in conversations]
    assert vlm.generate(conversations, max_new_tokens=16, batch_size=2) == expected
    assert vlm.model.generation_config.repetition_penalty == settings["repetition_penalty"]  # left as loaded
