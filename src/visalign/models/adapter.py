"""The VLM adapter: one class that drives every supported family through its own processor.

Family differences live in data (:mod:`visalign.models.families`) and in the differentiable pixel pipelines
(:mod:`visalign.models.pixels`); everything else goes through the checkpoint's processor and chat template.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, ProcessorMixin

from visalign.errors import VisalignError
from visalign.models.conversation import (
    Conversation,
    ImageLike,
    conversation_images,
    pil_to_tensor,
    tensor_to_pil,
    to_chat_messages,
)
from visalign.models.families import Family
from visalign.models.pixels import pixel_function

IGNORE_INDEX = -100
#: The published LLaVA-v1.6-Mistral template's typo for ``</s>`` in its source: ``<``, one or two backslashes, ``s>``.
_EOS_TYPO = re.compile(r"<\\{1,2}s>")
# Keys whose tensors run along the token sequence (padded per batch); image keys are concatenated instead.
_TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")
#: Inputs that Qwen-VL's ``get_rope_index`` reads besides the tokens.
_ROPE_GRID_KEYS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
#: ``generate`` settings for plain greedy decoding, each token the argmax of the model's own logits. A checkpoint's
#: generation config may set logits processors that transformers applies even without sampling (Qwen2.5-VL-Instruct
#: publishes ``repetition_penalty`` 1.05), or a search other than greedy (beams, constraints, contrastive, DoLa);
#: unset, they would make "greedy" answers family-dependent and unlike the distribution that the loss scores.
_GREEDY = {
    "do_sample": False, "num_beams": 1, "temperature": None, "top_p": None, "top_k": None,
    "constraints": None, "force_words_ids": None, "penalty_alpha": None, "dola_layers": None,
    "token_healing": False, "guidance_scale": None, "sequence_bias": None, "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None, "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "remove_invalid_values": False, "exponential_decay_length_penalty": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "watermarking_config": None,
}  # fmt: skip


def scored_token_count(labels: torch.Tensor) -> int:
    """How many tokens of a ``training_inputs`` batch :meth:`VLM.token_logprobs` scores (labels after the first)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


@dataclass
class ImageEncoding:
    """One image after the vision tower and projector: what the language model sees in its placeholders.

    Attributes:
        features: (image tokens, hidden size) embeddings scattered into the image placeholders.
        deepstack: Qwen3-VL's per-layer visual features for the same tokens (empty for other families).
    """

    features: torch.Tensor
    deepstack: tuple[torch.Tensor, ...] = ()


def _merge_encodings(images: Sequence[ImageEncoding]) -> SimpleNamespace:
    """Shape per-image encodings like the output of the model's ``get_image_features`` (its precomputed input)."""
    merged = SimpleNamespace(pooler_output=tuple(im.features for im in images))
    if images and images[0].deepstack:
        merged.deepstack_features = [tuple(im.deepstack[layer] for im in images)
                                     for layer in range(len(images[0].deepstack))]
    return merged


def render_conversation(processor: ProcessorMixin, conversation: Conversation, *, add_generation_prompt: bool) -> str:
    """Render a conversation to text with ``processor``'s own chat template (no weights needed)."""
    return processor.apply_chat_template(
        to_chat_messages(conversation), add_generation_prompt=add_generation_prompt, tokenize=False
    )


class InputRules:
    """What a family's processor refuses, checked from text and image sizes alone (no weights, no pixels).

    A training run checks every example with these before its first step (before the weights load, even), so a
    record the processor would refuse at step 5,000 is reported with its line up front. :class:`VLM` uses the same
    rules on every conversation it encodes.

    Args:
        processor: the checkpoint's processor (tokenizer, image processor).
        family: the checkpoint's family.
    """

    def __init__(self, processor: ProcessorMixin, family: Family) -> None:
        self.processor = processor
        self.family = family

    def image_count_problem(self, count: int) -> str | None:
        """Why a conversation with ``count`` images cannot go to the model, or None."""
        if count > 1 and not self.family.multi_image:
            return f"{self.family.name} takes one image per conversation, got {count}; compose them on one canvas"
        return None

    def text_problem(self, role: str, text: str, *, special_tokens: bool = False) -> str | None:
        """Why a turn's text cannot go to the model as written, or None.

        Args:
            role: the turn's role (for the message).
            text: the turn's text.
            special_tokens: also refuse the tokenizer's other special tokens (``</s>``, ``<|im_end|>`` ...): the
                tokenizer reads them as the control tokens themselves, so training data that quotes one would
                teach an end of turn mid-answer. Off for prompts to evaluate: an attack prompt may forge them on
                purpose, and the benchmark must pass them through to measure the model.
        """
        # The processor expands every image (and video) token it finds, so a literal one in a prompt would claim one.
        for kind in ("image", "video"):
            token = getattr(self.processor, f"{kind}_token", None)
            if isinstance(token, str) and token and token in text:
                return (f"a {role} turn contains {token!r}, {self.family.name}'s {kind} placeholder, as text "
                        f"({text[:60]!r}); remove or reword it (images go in the turn's images)")  # fmt: skip
        found = self._special_token_pattern.search(text) if special_tokens else None
        if found:
            return (f"a {role} turn contains {found.group()!r}, a special token of {self.family.name}'s tokenizer, "
                    f"as text ({text[:60]!r}); the tokenizer would read it as that control token, not as "
                    "characters; remove or reword it")  # fmt: skip
        return None

    @functools.cached_property
    def _special_token_pattern(self) -> re.Pattern:
        tokenizer = self.processor.tokenizer
        tokens = set(tokenizer.all_special_tokens)
        tokens |= {added.content for added in getattr(tokenizer, "added_tokens_decoder", {}).values() if added.special}
        longest_first = sorted((t for t in tokens if t.strip()), key=len, reverse=True)
        return re.compile("|".join(map(re.escape, longest_first)) or r"(?!)")  # (?!) never matches

    def image_size_problem(self, width: int, height: int) -> str | None:
        """Why the image processor would refuse an image of this size, or None.

        Qwen's resize rule (``smart_resize``, e.g. an aspect ratio over 200) is run on the size alone, as the
        installed image processor's own module defines it; LLaVA's processors resize and crop any size.
        """
        image_processor = self.processor.image_processor
        rule = getattr(sys.modules.get(type(image_processor).__module__), "smart_resize", None)
        if rule is None:
            return None
        size = getattr(image_processor, "size", None) or {}
        factor = getattr(image_processor, "patch_size", 14) * getattr(image_processor, "merge_size", 2)
        bounds = {"min_pixels": size.get("shortest_edge") or getattr(image_processor, "min_pixels", None),
                  "max_pixels": size.get("longest_edge") or getattr(image_processor, "max_pixels", None)}  # fmt: skip
        try:
            rule(height, width, factor=factor, **{k: v for k, v in bounds.items() if v})
        except ValueError as exc:
            return f"{self.family.name}'s processor refuses a {width}x{height} image: {exc}"
        return None


@dataclass(frozen=True)
class Generation:
    """One generated answer: its text, and whether the model ended it (False: cut at ``max_new_tokens``)."""

    text: str
    finished: bool


@dataclass
class VLM:
    """A loaded vision-language model with its processor, behind one interface for every family.

    Attributes:
        model: the Hugging Face model (``...ForConditionalGeneration``).
        processor: the checkpoint's processor (tokenizer, image processor, chat template).
        family: what visalign knows about the family (module names, multi-image support).
        spec: how the model was named when loaded (``default``, a path or a hub id).
    """

    model: PreTrainedModel
    processor: ProcessorMixin
    family: Family
    spec: str

    @property
    def tokenizer(self):
        """The processor's tokenizer."""
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        """Device of the model's input embeddings."""
        return self.model.get_input_embeddings().weight.device

    # ----------------------------------------------------------------------------------------------- rendering
    def render(self, conversation: Conversation, *, add_generation_prompt: bool) -> str:
        """Render a conversation to text with the processor's own chat template."""
        return render_conversation(self.processor, conversation, add_generation_prompt=add_generation_prompt)

    @property
    def rules(self) -> InputRules:
        """What this model's processor refuses (see :class:`InputRules`)."""
        return InputRules(self.processor, self.family)

    def _check_images(self, conversation: Conversation) -> None:
        """Refuse what the processor would fail on: too many images, or its image token typed in the text."""
        rules = self.rules
        problem = rules.image_count_problem(len(conversation_images(conversation)))
        for turn in conversation:
            problem = problem or rules.text_problem(turn.role, turn.text)
        if problem:
            raise VisalignError(problem)

    def _encode(self, texts: list[str], images: list[ImageLike]) -> dict[str, torch.Tensor]:
        """Tokenise rendered texts with their images; tensor images get differentiable pixel values."""
        pil_images = [tensor_to_pil(im) if isinstance(im, torch.Tensor) else im for im in images]
        try:
            batch = self.processor(
                text=texts, images=pil_images or None, padding=True, padding_side="left", return_tensors="pt"
            )
        except ValueError as exc:  # e.g. Qwen's resize refuses an aspect ratio over 200: that input, not the run
            sizes = ", ".join(f"{im.width}x{im.height}" for im in pil_images) or "no images"
            raise VisalignError(f"{self.family.name}'s processor refused the input ({sizes}): {exc}") from exc
        batch = dict(batch)
        if any(isinstance(im, torch.Tensor) for im in images):
            batch.update(self.pixels_from_images(images))
        return batch

    # --------------------------------------------------------------------------------------------- generation
    def chat_inputs(self, conversations: Sequence[Conversation], *, add_generation_prompt: bool = True) -> dict:
        """Left-padded model inputs for a batch of conversations (prompts ready for ``generate``).

        Images may be PIL images or [0, 1] tensors; tensors stay differentiable in ``pixel_values``.
        """
        for conversation in conversations:
            self._check_images(conversation)
        texts = [self.render(c, add_generation_prompt=add_generation_prompt) for c in conversations]
        images = [im for c in conversations for im in conversation_images(c)]
        return self._to_device(self._encode(texts, images))

    def generate(self, conversations: Sequence[Conversation], *, max_new_tokens: int = 128,
                 batch_size: int = 16) -> list[str]:
        """Greedy answers to each conversation, computed in left-padded batches.

        Plain greedy: each token is the argmax of the model's logits. Penalties and search settings in the
        checkpoint's generation config (a ``repetition_penalty``, beams) are overridden; its end-of-sequence ids
        still end an answer. Conversations are grouped by prompt length so that little padding is computed; the
        answers come back in the input order. In float32 they equal each prompt generated alone (tested for every
        family); in bfloat16 the batch's padding changes the last bits of the logits, so a few answers can change
        with the batch they share.
        """
        return [g.text for g in self.generate_detailed(conversations, max_new_tokens=max_new_tokens,
                                                       batch_size=batch_size)]

    @torch.inference_mode()
    def generate_detailed(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 128,
        batch_size: int = 16,
    ) -> list[Generation]:
        """Like :meth:`generate`, with whether each answer ended by itself or was cut at ``max_new_tokens``.

        Raises:
            VisalignError: a conversation the model cannot take, found before anything is generated, or a
                ``batch_size`` or ``max_new_tokens`` below 1.
        """
        if batch_size < 1:  # range() would run no batch and every answer would be the empty placeholder
            raise VisalignError(f"batch_size must be at least 1, got {batch_size}")
        if max_new_tokens < 1:  # transformers would raise a ValueError after the inputs were encoded
            raise VisalignError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        for conversation in conversations:  # all of them first: a late refusal would discard finished batches
            self._check_images(conversation)
        texts = [self.render(c, add_generation_prompt=True) for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(self.tokenizer(texts[i]).input_ids))
        answers: list[Generation] = [Generation("", True)] * len(texts)
        stops = self._stop_token_ids()
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            images = [im for i in chunk for im in conversation_images(conversations[i])]
            inputs = self._to_device(self._encode([texts[i] for i in chunk], images))
            output = self.model.generate(
                **inputs, **_GREEDY, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id
            )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            for i, tokens in zip(chunk, new_tokens, strict=True):
                text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                answers[i] = Generation(text, bool(torch.isin(tokens, stops).any()) or len(tokens) < max_new_tokens)
        return answers

    def _stop_token_ids(self) -> torch.Tensor:
        """The ids that end an answer: the generation config's end-of-sequence ids and the tokenizer's."""
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(self.tokenizer.eos_token_id)
        return torch.tensor(sorted(i for i in ids if i is not None), device=self.device)

    # ---------------------------------------------------------------------------------------------- training
    @functools.cached_property
    def _training_template(self) -> str | None:
        r"""The chat template training rows are rendered with, when it differs from the processor's own; else None.

        The template published with llava-hf/llava-v1.6-mistral-7b-hf closes an assistant turn with the literal
        text ``<\s>`` (a typo for ``</s>``): training on it would teach the model to print those four characters.
        Training rows render it with the tokenizer's end-of-sequence token instead, as LLaVA's own training data
        reads. Only training rows: prompts, and the template identity a Magic Image records, use the template as
        published, so neither changes.
        """
        eos, template = self.tokenizer.eos_token, self.processor.chat_template
        if isinstance(template, dict):  # named templates: apply_chat_template renders the "default" one
            template = template.get("default")
        if not isinstance(eos, str) or not isinstance(template, str) or not _EOS_TYPO.search(template):
            return None
        return _EOS_TYPO.sub(lambda _: eos, template)

    def _render_training(self, conversation: Conversation, *, add_generation_prompt: bool) -> str:
        """Render a conversation the way a training row is built (see :attr:`_training_template`)."""
        template = self._training_template
        if template is None:
            return self.render(conversation, add_generation_prompt=add_generation_prompt)
        messages = to_chat_messages(conversation)
        return self.processor.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def _assistant_spans(self, conversation: Conversation, full_text: str, full_ids: torch.Tensor) -> list[range]:
        """Token ranges of each assistant message (its text and end-of-turn marker) in the full sequence.

        The template must render each conversation as a text prefix of its continuations (the row up to the turn's
        generation prompt, then up to the end of the turn, then the full row). The tokens need not be prefixes:
        tokenised alone, a turn that the template ends with a space (LLaVA-1.5, LLaVA-v1.6-Mistral) keeps that
        space as its own token, while in the full row it merges into the next turn's first word; likewise a
        byte-level BPE merges the generation prompt's closing newline with an answer's leading whitespace. So a
        span runs from where the prompt's tokens stop matching the row to where the turn's tokens stop matching
        it: when both match whole, as they do for most templates, those are exactly their lengths. A token merged
        across the start of the answer is labelled (it carries the answer's first characters); one merged across
        the end is not (it carries the next turn's).
        """
        spans = []
        for index, turn in enumerate(conversation):
            if turn.role != "assistant":
                continue
            prefix_text = self._render_training(conversation[:index], add_generation_prompt=True)
            upto_text = self._render_training(conversation[: index + 1], add_generation_prompt=False)
            # A template that renders earlier turns differently once later ones follow (a system prompt that
            # depends on the last turn, a reasoning block dropped from history) gives rows that no span fits.
            if not full_text.startswith(upto_text) or not upto_text.startswith(prefix_text):
                raise VisalignError(
                    f"the chat template of {self.spec} does not render conversations as prefixes of each other; "
                    "assistant tokens cannot be located"
                )
            prefix_images = conversation_images(conversation[:index])
            prefix = self._encode([prefix_text], prefix_images)["input_ids"][0]
            upto = self._encode([upto_text], prefix_images)["input_ids"][0]
            start = _common_prefix_length(prefix, full_ids)
            end = max(start, _common_prefix_length(upto, full_ids))
            # Trailing whitespace after the end-of-turn marker is template layout, not the assistant's words.
            while end > start and not self.tokenizer.decode(full_ids[end - 1 : end]).strip():
                end -= 1
            spans.append(range(start, end))
        return spans

    def training_inputs(self, conversations: Sequence[Conversation]) -> dict[str, torch.Tensor]:
        """Right-padded inputs with ``labels``: -100 everywhere except the assistant's tokens.

        Each conversation must contain at least one assistant turn; prompt, image and padding tokens are masked.
        The labelled tokens of every assistant turn end with a token generation stops on: where the chat template
        closes a turn without one (the template published with llava-hf/llava-1.5-7b-hf ends it with a space),
        the tokenizer's end-of-sequence token is inserted after the turn's text and labelled, as LLaVA's own
        training data has it; otherwise a fine-tune would learn never to stop.
        """
        rows = []
        stops = set(self._stop_token_ids().tolist())
        for conversation in conversations:
            self._check_images(conversation)
            if not any(t.role == "assistant" for t in conversation):
                raise VisalignError("a training conversation needs at least one assistant turn")
            images = conversation_images(conversation)
            text = self._render_training(conversation, add_generation_prompt=False)
            encoded = self._encode([text], images)
            ids = encoded["input_ids"][0]
            encoded["labels"] = torch.full_like(encoded["input_ids"], IGNORE_INDEX)
            # Last span first: a token inserted after a turn shifts the turns after it, not the ones before.
            for span in reversed(self._assistant_spans(conversation, text, ids)):
                stop = span.stop
                if stops and not (stop > span.start and int(ids[stop - 1]) in stops):
                    encoded = _insert_token(encoded, stop, self._closing_token_id(stops))
                    stop += 1
                encoded["labels"][0, span.start : stop] = encoded["input_ids"][0, span.start : stop]
            rows.append(encoded)
        return self._to_device(collate_rows(rows, pad_id=self.tokenizer.pad_token_id))

    def _closing_token_id(self, stops: set[int]) -> int:
        """The token appended to an assistant turn its template leaves open: the tokenizer's end of sequence."""
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else min(stops)

    def loss(self, batch: dict[str, torch.Tensor], *, images: Sequence[ImageEncoding] | None = None) -> torch.Tensor:
        """Mean cross-entropy over the labelled (assistant) tokens of a ``training_inputs`` batch.

        Only positions with a label are projected to the vocabulary, so no full-sequence logits are built.

        Args:
            batch: a ``training_inputs`` batch.
            images: precomputed encodings of the batch's images in placeholder order (see :meth:`encode_images`);
                when given, the batch's ``pixel_values`` are ignored and the vision tower is not run.
        """
        return -self.token_logprobs(batch, images=images).mean()

    def token_logprobs(
        self, batch: dict[str, torch.Tensor], *, images: Sequence[ImageEncoding] | None = None
    ) -> torch.Tensor:
        """Log-probability of each labelled token, flattened row by row (the order of ``labels[:, 1:] != -100``).

        Only the labelled positions reach the LM head. ``images`` as in :meth:`loss`: one encoding may be shared
        by every row of the batch, so a Magic Image step runs the vision tower once, not once per sample.
        """
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if images is not None:
            inputs.pop("pixel_values", None)
            inputs["mm_encoder_outputs"] = {"image": _merge_encodings(images)}
        # Position t predicts token t + 1: keep hidden states at positions whose next token is labelled. They are
        # found on the host before any work is queued; a boolean mask applied on the GPU after the forward would
        # stall the host until the whole forward had run, and leave the GPU idle while the backward is launched.
        rows, columns = torch.nonzero(labels[:, 1:].cpu() != IGNORE_INDEX, as_tuple=True)
        if rows.numel() == 0:
            raise VisalignError("the batch has no assistant tokens to train on")
        flat = (rows * labels.shape[1] + columns).to(labels.device)  # row-major, as a boolean mask would order them
        if "position_ids" not in inputs:
            positions = self.rope_positions(inputs)
            if positions is not None:
                inputs["position_ids"] = positions
        outputs = self.model.model(**inputs, use_cache=False)
        hidden = outputs.last_hidden_state.flatten(0, 1).index_select(0, flat)
        logits = self.model.lm_head(hidden).float()
        return -F.cross_entropy(logits, labels.flatten().index_select(0, flat + 1), reduction="none")

    def rope_positions(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Multimodal rotary positions (Qwen-VL families), computed on the CPU before the forward; else None.

        transformers computes them inside the forward, after the vision tower, by reading GPU tensors back one
        sample at a time: each read waits for the tower to finish and the GPU idles while Python walks the tokens.
        Computed here, the only wait is one copy of the token ids, made before any work of the step is queued.
        """
        model = self.model.model
        has_grid = inputs.get("image_grid_thw") is not None or inputs.get("video_grid_thw") is not None
        if not hasattr(model, "get_rope_index") or "mm_token_type_ids" not in inputs or not has_grid:
            return None  # transformers' forward leaves these cases to the language model too
        keys = ("input_ids", "mm_token_type_ids", "attention_mask", *_ROPE_GRID_KEYS)
        positions, _ = model.get_rope_index(**{key: inputs[key].cpu() for key in keys if inputs.get(key) is not None})
        return positions.to(self.device)

    def encode_images(self, images: Sequence[ImageLike]) -> list[ImageEncoding]:
        """Run the vision tower and projector once over ``images``; tensors keep their gradients.

        The encodings can be passed to :meth:`loss` / :meth:`token_logprobs` in place of pixel values, and one
        encoding may be reused for several rows.
        """
        pixels = self._to_device(self.pixels_from_images(images))
        output = self.model.model.get_image_features(**pixels, return_dict=True)
        deepstack = getattr(output, "deepstack_features", None) or []
        return [
            ImageEncoding(features=features, deepstack=tuple(layer[index] for layer in deepstack))
            for index, features in enumerate(output.pooler_output)
        ]

    # ------------------------------------------------------------------------------------------------ pixels
    def pixels_from_image(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Differentiable pixel inputs for one (3, H, W) image in [0, 1] (see :mod:`visalign.models.pixels`)."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise VisalignError(f"expected an image tensor of shape (3, H, W), got {tuple(image.shape)}")
        return pixel_function(self.processor.image_processor)(image, self.processor.image_processor)

    def pixels_from_images(self, images: Sequence[ImageLike]) -> dict[str, torch.Tensor]:
        """Pixel inputs for several images, concatenated the way the family's processor batches them."""
        parts = [self.pixels_from_image(im if isinstance(im, torch.Tensor) else pil_to_tensor(im)) for im in images]
        merged = {}
        for key in parts[0]:
            tensors = [p[key] for p in parts]
            if key == "pixel_values" and tensors[0].ndim == 5:  # LLaVA-NeXT: pad the crop dimension
                most = max(t.shape[1] for t in tensors)
                tensors = [F.pad(t, (0, 0, 0, 0, 0, 0, 0, most - t.shape[1])) for t in tensors]
            merged[key] = torch.cat(tensors)
        return merged

    def _to_device(self, batch: dict) -> dict:
        dtype = self.model.dtype
        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if key == "pixel_values":
                    value = value.to(dtype)
            moved[key] = value
        return moved


def _common_prefix_length(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading elements two 1-D tensors share."""
    length = min(len(a), len(b))
    differ = torch.nonzero(a[:length] != b[:length])
    return int(differ[0]) if len(differ) else length


def _insert_token(row: dict[str, torch.Tensor], position: int, token_id: int) -> dict[str, torch.Tensor]:
    """A single-sequence row with one text token inserted before ``position`` (attended, not an image token)."""
    inserted = {}
    for key, value in row.items():
        if key in _TOKEN_KEYS:
            fill = {"input_ids": token_id, "labels": IGNORE_INDEX, "attention_mask": 1}.get(key, 0)
            value = torch.cat([value[:, :position], value.new_full((1, 1), fill), value[:, position:]], dim=1)
        inserted[key] = value
    return inserted


def collate_rows(rows: list[dict[str, torch.Tensor]], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token tensors of single-sequence rows into a batch and concatenate their image tensors.

    Rows are ``training_inputs`` outputs of one conversation each; rows may be cached and re-collated per step.
    """
    length = max(row["input_ids"].shape[1] for row in rows)
    keys = dict.fromkeys(key for row in rows for key in row)  # rows without images lack the image keys
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        tensors = [row[key] for row in rows if key in row]
        if key in _TOKEN_KEYS:
            fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}.get(key, 0)
            tensors = [F.pad(t, (0, length - t.shape[1]), value=fill) for t in tensors]
        elif key == "pixel_values" and tensors[0].ndim == 5:
            most = max(t.shape[1] for t in tensors)
            tensors = [F.pad(t, (0, 0, 0, 0, 0, 0, 0, most - t.shape[1])) for t in tensors]
        batch[key] = torch.cat(tensors)
    return batch
