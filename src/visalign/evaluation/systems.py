"""Systems under evaluation: something that answers a batch of (text, images) prompts.

A local system drives a model through :mod:`visalign.models` (batched, greedy), optionally with a system-prompt
defence, a VSFA adapter or a magic image. An API system sends the same conversations to any OpenAI-compatible
server. Models are loaded once per run and shared by the systems that use the same weights; the runner releases
each model once no later system uses it.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from visalign.errors import VisalignError
from visalign.evaluation.config import SystemConfig
from visalign.evaluation.defences import resolve_defence_prompt
from visalign.images import png_bytes
from visalign.models import VLM, Conversation, Turn, load_vlm


@dataclass
class Prompt:
    """One prompt to answer: its text and its (already loaded) images."""

    text: str
    images: list[Image.Image] = field(default_factory=list)


class System(Protocol):
    """Anything that answers prompts; ``decoding`` describes how (recorded with every answer)."""

    name: str
    decoding: dict

    def respond(self, prompts: Sequence[Prompt]) -> list[str | BaseException]:
        """Answer each prompt; a per-prompt failure is returned in place as an exception."""
        ...


def build_conversation(prompt: Prompt, system_prompt: str | None) -> Conversation:
    """The conversation a system sees: an optional system turn, then the user's images and text."""
    turns = [Turn("system", system_prompt)] if system_prompt else []
    turns.append(Turn("user", prompt.text, list(prompt.images)))
    return turns


@dataclass
class LocalSystem:
    """A model run in this process through the models layer, with optional defences."""

    name: str
    vlm: VLM
    max_new_tokens: int
    batch_size: int
    system_prompt: str | None = None
    conversation_hook: object | None = None  # callable(Conversation) -> Conversation, e.g. attach a magic image
    decoding: dict = field(default_factory=dict)

    def conversation(self, prompt: Prompt) -> Conversation:
        """The conversation the model is asked for ``prompt`` (defence prompt and magic image included).

        Raises:
            VisalignError: the model cannot take it (two images for a one-image family, an image its processor
                refuses).
        """
        conversation = build_conversation(prompt, self.system_prompt)
        if self.conversation_hook is not None:
            conversation = self.conversation_hook(conversation)
        self.vlm.chat_inputs([conversation])  # validates image count and template before batching
        return conversation

    def respond(self, prompts: Sequence[Prompt]) -> list[str | BaseException]:
        """Greedy answers in batches; a conversation the model cannot take (e.g. two images) fails alone."""
        conversations: list[Conversation | BaseException] = []
        for prompt in prompts:
            try:
                conversations.append(self.conversation(prompt))
            except VisalignError as exc:
                conversations.append(exc)
        valid = [c for c in conversations if not isinstance(c, BaseException)]
        answers = iter(self.vlm.generate(valid, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size))
        return [c if isinstance(c, BaseException) else next(answers) for c in conversations]


@dataclass
class ApiSystem:
    """A model behind an OpenAI-compatible chat completions endpoint."""

    name: str
    client: object  # visalign.clients.ChatClient
    max_new_tokens: int
    system_prompt: str | None = None
    decoding: dict = field(default_factory=dict)

    def _messages(self, prompt: Prompt) -> list[dict]:
        from visalign.clients import image_part

        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        parts = [image_part(png_bytes(image)) for image in prompt.images]
        parts.append({"type": "text", "text": prompt.text})
        messages.append({"role": "user", "content": parts})
        return messages

    def respond(self, prompts: Sequence[Prompt]) -> list[str | BaseException]:
        """Send every prompt concurrently (the client caches, retries and rate-limits)."""
        from visalign.clients import run_all

        calls = [self.client.complete(self._messages(p), temperature=0.0, max_tokens=self.max_new_tokens)
                 for p in prompts]
        results = run_all(calls, f"{self.name}: answers", return_exceptions=True)
        return [r if isinstance(r, BaseException) else r.text for r in results]


def configured_magic_image(config: SystemConfig):
    """Load the magic image a system config names: a PNG, or a folder and the system's ``value_system``.

    Raises:
        VisalignError: a folder without a value system, an image or sidecar that cannot be read, or a PNG whose
            sidecar names another value system than the config's (records would name the wrong policy).
    """
    from visalign.magic import find_magic_image, load_magic_image

    if config.magic_image.is_dir():
        if not config.value_system:
            raise VisalignError(f"system {config.name!r}: magic_image is a folder; name a value_system in it")
        return find_magic_image(config.magic_image, config.value_system)
    magic = load_magic_image(config.magic_image)
    if config.value_system and magic.value_system != config.value_system:
        raise VisalignError(
            f"system {config.name!r}: {magic.path} was optimised for value system {magic.value_system or '(none)'!r} "
            f"(its sidecar), not {config.value_system!r}; name its own value system or the image of "
            f"{config.value_system!r}"
        )
    return magic


def _magic_image(config: SystemConfig):
    """The configured magic image, refused when made for other weights (unless the config allows it)."""
    from visalign.magic import model_mismatch

    magic = configured_magic_image(config)
    if not config.allow_model_mismatch and (reason := model_mismatch(magic, config.model)):
        raise VisalignError(f"system {config.name!r}: {reason}")
    return magic


def _magic_image_hook(magic, vlm: VLM):
    """A conversation transform that attaches the loaded magic image ``magic``."""
    from visalign.magic import with_magic_image

    return lambda conversation: with_magic_image(vlm, [conversation], magic)[0]


def _adapter_problem(config: SystemConfig) -> str | None:
    """Why the configured adapter cannot be used on the system's model, or None."""
    if not config.adapter.is_dir():
        return f"adapter folder {config.adapter} not found"
    if config.allow_model_mismatch:
        return None
    from visalign.vsfa.training import base_mismatch  # same layer; imported where it is used

    return base_mismatch(config.adapter, config.model)


ModelKey = tuple[str, str | None, str]


def _device_type() -> str:
    """The device type a local model is loaded on here: ``cuda`` where torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def local_precision(config: SystemConfig) -> tuple[str, str]:
    """The weights dtype and device type a local system's model is loaded with on this machine.

    ``dtype: auto`` resolves as :func:`visalign.models.load_vlm` resolves it: float32 on a CPU, bfloat16 on a GPU.
    Both are pinned by a run (:mod:`visalign.evaluation.pinned_inputs`), since answers depend on both.

    Returns:
        The dtype's name and the device type, e.g. ``("float32", "cpu")``.
    """
    device = _device_type()
    if config.dtype != "auto":
        return config.dtype, device
    return ("float32" if device == "cpu" else "bfloat16"), device


class SystemFactory:
    """Builds systems from their configs, loading each distinct local model once and keeping it until released."""

    def __init__(self, *, max_new_tokens: int, batch_size: int, cache_dir: Path) -> None:
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._models: dict[ModelKey, VLM] = {}

    @staticmethod
    def model_key(config: SystemConfig) -> ModelKey | None:
        """The local model a system runs (weights, adapter and the dtype it resolves to), or None for an API system.

        Systems that differ only by a magic image or a defence prompt share one model; ``auto`` and the dtype it
        resolves to here share one too.
        """
        if config.backend != "local":
            return None
        return (config.model, str(config.adapter) if config.adapter else None, local_precision(config)[0])

    def _vlm(self, config: SystemConfig) -> VLM:
        key = self.model_key(config)
        if key not in self._models:
            dtype, device = local_precision(config)  # what the run pinned, so nothing else decides it
            self._models[key] = load_vlm(config.model, adapter=config.adapter, dtype=dtype, device=device)
        return self._models[key]

    def loaded(self) -> list[ModelKey]:
        """The models held now, by key."""
        return list(self._models)

    def release(self, keep: Sequence[SystemConfig] = ()) -> None:
        """Drop every held model that none of the systems in ``keep`` runs, and give its memory back.

        A model also stays alive while a system built on it is referenced: drop the system first.
        """
        needed = {self.model_key(config) for config in keep}
        unused = [key for key in self._models if key not in needed]
        for key in unused:
            del self._models[key]
        if unused:
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    def check(self, config: SystemConfig) -> None:
        """Refuse now what :meth:`build` would refuse later, without loading a model.

        Run for every system before an evaluation writes its run folder: an unset API key variable, an unknown
        defence prompt, a missing adapter or an adapter or magic image made for other weights would otherwise be
        found only after the manifest, which then refuses the corrected config in the same folder.

        Raises:
            VisalignError: the first problem, naming the system.
        """
        resolve_defence_prompt(config.defence_prompt)
        if config.backend == "openai":
            from visalign.clients import ChatClient

            ChatClient(config.base_url, api_key_env=config.api_key_env, model=config.model,
                       concurrency=config.concurrency)  # checks the URL and the key variable; sends nothing
            return
        if config.adapter is not None and (reason := _adapter_problem(config)):
            raise VisalignError(f"system {config.name!r}: {reason}")
        if config.magic_image is not None:
            _magic_image(config)

    def build(self, config: SystemConfig) -> System:
        """Return a ready system for ``config``."""
        system_prompt = resolve_defence_prompt(config.defence_prompt)
        decoding = {"max_new_tokens": self.max_new_tokens, "temperature": 0.0, "backend": config.backend,
                    "model": config.model}
        if config.defence_prompt is not None:
            decoding["defence_prompt"] = config.defence_prompt
        if config.backend == "openai":
            from visalign.clients import ChatClient

            client = ChatClient(config.base_url, api_key_env=config.api_key_env, model=config.model,
                                concurrency=config.concurrency, cache_dir=self.cache_dir / "api")
            return ApiSystem(config.name, client, self.max_new_tokens, system_prompt, decoding)
        if config.adapter is not None and (reason := _adapter_problem(config)):  # before a wasted model load
            raise VisalignError(f"system {config.name!r}: {reason}")
        vlm = self._vlm(config)
        hook = None
        if config.magic_image is not None:
            magic = _magic_image(config)
            hook = _magic_image_hook(magic, vlm)
            decoding["magic_image"] = str(config.magic_image)
            decoding["value_system"] = magic.value_system or None  # the sidecar's: what the image was made for
        if config.adapter is not None:
            decoding["adapter"] = str(config.adapter)
        # as loaded: in bfloat16 an answer depends on its batch, and CPU and CUDA kernels round differently
        decoding["dtype"] = str(vlm.model.dtype).removeprefix("torch.")
        decoding["device"] = vlm.device.type
        return LocalSystem(config.name, vlm, self.max_new_tokens, self.batch_size, system_prompt, hook, decoding)
