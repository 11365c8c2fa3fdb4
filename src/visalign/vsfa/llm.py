"""Chat backends for the scene and VQA stages: any OpenAI-compatible endpoint, or a local VLM offline.

Both take the same provider-neutral :class:`Message` list (text plus optional PNG images) and return a
:class:`Reply` with the text and the usage attributed to it.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from visalign.errors import VisalignError
from visalign.vsfa.config import OfflineLLMConfig, OpenAIChatConfig
from visalign.vsfa.records import Usage


@dataclass
class Message:
    """One chat message: ``role`` is system, user or assistant; ``images`` are encoded PNG bytes."""

    role: str
    text: str
    images: list[bytes] = field(default_factory=list)


@dataclass
class Reply:
    """What a backend answered, and the tokens/cost it is charged with (even when served from a cache)."""

    text: str
    usage: Usage


class ChatBackend(Protocol):
    """The interface the stages call; ``name`` is recorded in every record and the dataset card."""

    name: str
    concurrency: int

    async def complete(self, messages: list[Message], *, json_mode: bool = True) -> Reply:
        """Answer one conversation."""
        ...

    def usage_totals(self) -> dict:
        """Return this session's totals (requests, retries, cache hits, money actually paid)."""
        ...

    async def aclose(self) -> None:
        """Release connections or models."""
        ...


class OpenAIChatBackend:
    """Chat completions on an OpenAI-compatible endpoint through :class:`visalign.clients.ChatClient`.

    Args:
        config: the endpoint, model, limits and prices.
        cache_dir: the content-addressed response cache (a resumed run never pays twice).
    """

    def __init__(self, config: OpenAIChatConfig, cache_dir: Path) -> None:
        from visalign.clients import ChatClient

        self.config = config
        self.client = ChatClient(
            config.base_url,
            api_key_env=config.api_key_env,
            model=config.model,
            concurrency=config.concurrency,
            requests_per_second=config.requests_per_second,
            max_retries=config.max_retries,
            timeout_s=config.timeout_s,
            cache_dir=cache_dir,
            price_per_1k_input=config.input_usd_per_mtok / 1000,
            price_per_1k_output=config.output_usd_per_mtok / 1000,
        )
        self.name = f"openai:{config.model}"
        self.concurrency = config.concurrency

    async def complete(self, messages: list[Message], *, json_mode: bool = True) -> Reply:
        """Send one conversation; images travel as inline ``image_url`` parts.

        Raises:
            visalign.clients.ClientError: the request failed after the client's retries.
        """
        from visalign.clients import image_part

        payload = []
        for message in messages:
            if message.images:
                parts = [{"type": "text", "text": message.text}] + [image_part(png) for png in message.images]
                payload.append({"role": message.role, "content": parts})
            else:
                payload.append({"role": message.role, "content": message.text})
        result = await self.client.complete(
            payload,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            response_format={"type": "json_object"} if json_mode and self.config.json_mode else None,
        )
        # Cost at the configured prices even for cache hits: the record describes what the data cost.
        cost = (
            result.prompt_tokens * self.config.input_usd_per_mtok
            + result.completion_tokens * self.config.output_usd_per_mtok
        ) / 1e6
        usage = Usage(
            calls=1,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_usd=round(cost, 8),
            cached_calls=int(result.cached),
        )
        return Reply(text=result.text, usage=usage)

    def usage_totals(self) -> dict:
        """Return the client's usage accounting for this session."""
        return self.client.usage.as_dict()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.client.aclose()


class OfflineChatBackend:
    """A local VLM (``default`` = the embedded model) behind the same interface, with micro-batching.

    Concurrent :meth:`complete` calls are gathered into batches of ``batch_size`` and run through
    ``VLM.generate`` in a worker thread, so the event loop (and the progress bar) keeps moving.

    Args:
        config: which model, batch size and generation length.
    """

    def __init__(self, config: OfflineLLMConfig) -> None:
        self.config = config
        self.name = f"offline:{config.model}"
        self.concurrency = config.batch_size * 2
        self._vlm = None
        self._pending: list[tuple[list, asyncio.Future[str]]] = []
        self._worker: asyncio.Task | None = None
        self._calls = 0

    def _model(self):
        if self._vlm is None:
            from visalign.models import load_vlm

            self._vlm = load_vlm(self.config.model, dtype=self.config.dtype, device=self.config.device)
        return self._vlm

    async def complete(self, messages: list[Message], *, json_mode: bool = True) -> Reply:
        """Queue one conversation for the next batch and wait for its answer.

        Raises:
            VisalignError: the model could not be loaded or generation failed.
        """
        from visalign.models import Turn

        conversation = [Turn(role=m.role, text=m.text, images=[_rgb(png) for png in m.images]) for m in messages]
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((conversation, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        text = await future
        self._calls += 1
        return Reply(text=text, usage=Usage(calls=1))

    async def _drain(self) -> None:
        size = self.config.batch_size
        while self._pending:
            # Give concurrent callers a few turns of the loop to join this batch.
            for _ in range(5):
                if len(self._pending) >= size:
                    break
                await asyncio.sleep(0)
            batch, self._pending = self._pending[:size], self._pending[size:]
            try:
                outputs = await asyncio.to_thread(self._generate, [conversation for conversation, _ in batch])
            except Exception as exc:  # one bad batch must not hang its callers
                error = (
                    exc
                    if isinstance(exc, VisalignError)
                    else VisalignError(
                        f"offline model '{self.config.model}' failed to generate: {type(exc).__name__}: {exc}"
                    )
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), text in zip(batch, outputs, strict=True):
                if not future.done():
                    future.set_result(text)

    def _generate(self, conversations: list) -> list[str]:
        return self._model().generate(
            conversations, max_new_tokens=self.config.max_new_tokens, batch_size=self.config.batch_size
        )

    def usage_totals(self) -> dict:
        """Return the number of generations this session (offline costs nothing)."""
        return {"requests": self._calls, "cost_usd": 0.0}

    async def aclose(self) -> None:
        """Nothing to close; the model is freed with the backend."""


def _rgb(png: bytes):
    """A message's image bytes as an RGB PIL image; one-line error for bytes that do not decode."""
    from visalign.images import decode_image

    with decode_image(io.BytesIO(png), name="an image of the conversation") as image:
        return image.convert("RGB")


def make_chat_backend(config: OpenAIChatConfig | OfflineLLMConfig, cache_dir: Path) -> ChatBackend:
    """Build the backend a config section names.

    Raises:
        VisalignError: the API key variable is unset or the endpoint URL is invalid (one line, names the variable).
    """
    if isinstance(config, OpenAIChatConfig):
        return OpenAIChatBackend(config, cache_dir)
    return OfflineChatBackend(config)
