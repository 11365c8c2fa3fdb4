"""Client for OpenAI-compatible chat completions with image parts (OpenAI, vLLM, SGLang, Ark, local)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visalign.clients.base import ApiClient
from visalign.clients.cache import request_key
from visalign.clients.errors import ResponseFormatError

CHAT_PATH = "/chat/completions"


def image_part(image_bytes: bytes, mime: str = "image/png") -> dict[str, Any]:
    """Return an OpenAI ``image_url`` message part carrying the image inline as a data URL.

    Args:
        image_bytes: the encoded image (PNG by default).
        mime: its media type, e.g. ``image/jpeg``.
    """
    encoded = base64.b64encode(image_bytes).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}


@dataclass(frozen=True)
class ChatResult:
    """One chat completion.

    Attributes:
        text: the assistant message content ("" when the API returned none).
        prompt_tokens: input tokens reported by the API.
        completion_tokens: output tokens reported by the API.
        cost_usd: what this call cost now (0.0 when served from the cache).
        cached: True when no request was paid for (cache hit or shared with an identical request in flight).
        raw: the response JSON.
        finish_reason: why generation stopped (``stop``, ``length``, ...), when reported.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    raw: dict[str, Any] = field(repr=False)
    finish_reason: str | None = None


def _parse_chat(data: dict[str, Any]) -> dict[str, Any]:
    """Check that a response has the fields a chat completion promises; return it unchanged."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ResponseFormatError("response has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ResponseFormatError("first choice has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ResponseFormatError("message content is not text")
    return data


class ChatClient(ApiClient):
    """Async client for ``POST {base_url}/chat/completions``.

    Args:
        base_url: API root (default OpenAI's).
        api_key_env: environment variable with the key; None for local servers without keys.
        model: the model name sent with every request.
        concurrency: most requests in flight at once.
        requests_per_second: client-side rate limit (None: no limit).
        max_retries: retries after the first attempt.
        timeout_s: the most one attempt may take, in seconds, from sending the request to the last byte of
            the answer (a server that trickles its body is cut off there, and the attempt retried).
        cache_dir: content-addressed response cache directory (None: no cache).
        price_per_1k_input: USD per 1,000 prompt tokens, for cost accounting.
        price_per_1k_output: USD per 1,000 completion tokens.
        **kwargs: further :class:`ApiClient` settings (``burst``, ``backoff_base_s``, ...).
    """

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        model: str = "gpt-4o-mini",
        concurrency: int = 8,
        requests_per_second: float | None = None,
        max_retries: int = 5,
        timeout_s: float = 60.0,
        cache_dir: str | Path | None = None,
        price_per_1k_input: float = 0.0,
        price_per_1k_output: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            base_url,
            api_key_env=api_key_env,
            concurrency=concurrency,
            requests_per_second=requests_per_second,
            max_retries=max_retries,
            timeout_s=timeout_s,
            cache_dir=cache_dir,
            **kwargs,
        )
        self.model = model
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", model={self.model!r})"

    def request_body(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Return the JSON body :meth:`complete` sends (useful for dry runs and cache inspection)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if response_format is not None:
            body["response_format"] = response_format
        if seed is not None:
            body["seed"] = seed
        return body

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> ChatResult:
        """Send one chat completion request, or answer it from the cache.

        Args:
            messages: OpenAI-format messages; content may be a string or a list of ``text`` and
                ``image_url`` parts (see :func:`image_part`).
            temperature: sampling temperature.
            max_tokens: cap on generated tokens (omitted when None).
            response_format: e.g. ``{"type": "json_object"}`` (omitted when None).
            seed: sampling seed, for providers that honour it (omitted when None).

        Raises:
            ClientError: the request failed after retries or was rejected; the message names the URL.
        """
        body = self.request_body(
            messages,
            temperature=temperature,
            max_tokens=max_tokens,
            response_format=response_format,
            seed=seed,
        )
        key = request_key(self.endpoint(CHAT_PATH), body)
        if self.cache is not None:
            hit = self.cache.get_json(key)
            if hit is not None:
                try:
                    _parse_chat(hit)
                except ResponseFormatError:
                    hit = None
            if hit is not None:
                self.usage.cached += 1
                return self._result(hit, cached=True)

        async def fetch() -> dict[str, Any]:
            data = await self._post_json(CHAT_PATH, body, _parse_chat)
            if self.cache is not None:
                self.cache.put_json(key, data)
            return data

        data, shared = await self._shared(key, fetch)
        if shared:
            self.usage.cached += 1
            return self._result(data, cached=True)
        result = self._result(data, cached=False)
        self.usage.prompt_tokens += result.prompt_tokens
        self.usage.completion_tokens += result.completion_tokens
        self.usage.cost_usd += result.cost_usd
        return result

    def _result(self, data: dict[str, Any], *, cached: bool) -> ChatResult:
        choice = data["choices"][0]
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        cost = (prompt_tokens * self.price_per_1k_input + completion_tokens * self.price_per_1k_output) / 1000
        return ChatResult(
            text=choice["message"].get("content") or "",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=0.0 if cached else cost,
            cached=cached,
            raw=data,
            finish_reason=choice.get("finish_reason"),
        )
