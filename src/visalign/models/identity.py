"""What a loaded model's outputs depend on besides its weights: its chat template and tokenizer files.

The weights fingerprint (:func:`visalign.models.weights_fingerprint`) covers the weight files only. An edited chat
template or system prompt, or another tokenizer, changes every training row, every generated answer and every
Magic Image target, so the jobs that resume pin this identity beside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image
from transformers import ProcessorMixin

from visalign.models.adapter import VLM, render_conversation
from visalign.models.conversation import assistant, user
from visalign.models.loading import resolve_spec
from visalign.runs import sha256_file

#: Files beside the weights that decide how a conversation becomes tokens and how an answer is decoded: the chat
#: template, tokenizer, processor, model and generation configs (``*.txt``: a BPE ``merges.txt``).
_TEMPLATE_FILES = ("*.json", "*.jinja", "*.txt", "*.model")


def template_identity(vlm: VLM) -> str:
    """A digest of how ``vlm`` turns conversations into tokens, which its weights fingerprint does not cover.

    The chat template rendered for a fixed conversation (with an image, an answer and a generation prompt) and
    the bytes of the tokenizer, processor, chat-template and config files in a local checkpoint folder: an edited
    template or system prompt changes every training row and every self-generated answer.
    """
    return processor_template_identity(vlm.processor, vlm.spec)


def processor_template_identity(processor: ProcessorMixin, spec: str) -> str:
    """:func:`template_identity` from the model's processor alone, before (or without) loading its weights."""
    digest = hashlib.sha256()
    probe = Image.new("RGB", (8, 8), "white")
    for conversation, generation_prompt in (([user("x", probe), assistant("y")], False), ([user("x")], True)):
        digest.update(render_conversation(processor, conversation, add_generation_prompt=generation_prompt).encode())
    folder = Path(resolve_spec(spec))
    if folder.is_dir():  # a hub id has no local folder: its rendering above is what is known of it
        for path in sorted({p for pattern in _TEMPLATE_FILES for p in folder.glob(pattern) if p.is_file()}):
            digest.update(f"{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()[:16]
