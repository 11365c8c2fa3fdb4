"""Client guards: backoff past 1024 retries, a 429 that outlives every retry, damaged cache entries, PNG padding."""

import io
import logging

import pytest
from PIL import Image

from visalign.clients import ChatClient, ClientError, ImageClient, run_all, to_png
from visalign.testing import CHAT_PATH, IMAGES_PATH, Fault, render_png

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_backoff_stays_at_its_cap_past_1024_retries(server, api_key):
    # 2**1024 overflows a float: the 1025th retry used to raise OverflowError instead of waiting backoff_max_s
    client = ChatClient(server.base_url, api_key_env="VISALIGN_TEST_API_KEY", max_retries=5000,
                        backoff_base_s=0.5, backoff_max_s=0.0)  # fmt: skip
    server.inject(Fault("503", path=CHAT_PATH), times=1030)
    result = run_all([client.complete([{"role": "user", "content": "hi"}])], show_progress=False)[0]
    assert result.text and client.usage.attempts == 1031 and client.usage.retries == 1030
    capped = ChatClient(server.base_url, api_key_env=None, backoff_base_s=0.5, backoff_max_s=4.0)
    assert all(2.0 <= capped._backoff(attempt, None) <= 4.0 for attempt in (1024, 5000, 10**6))


def test_a_429_that_outlives_every_retry_says_the_quota_or_rate_limit_is_exhausted(server, api_key):
    server.inject(Fault("429", retry_after=None, path=CHAT_PATH), times=2)
    client = ChatClient(server.base_url, api_key_env="VISALIGN_TEST_API_KEY", max_retries=1, backoff_base_s=0.01)
    with pytest.raises(ClientError) as info:
        run_all([client.complete([{"role": "user", "content": "hi"}])], show_progress=False)
    message = str(info.value)
    assert info.value.status == 429 and "\n" not in message
    assert message.startswith(
        f"POST {server.base_url}/chat/completions failed after 2 attempts, last: HTTP 429 (injected rate limit); "
        "the quota or rate limit of this API key is exhausted"
    )
    assert [r.status for r in server.requests_to(CHAT_PATH)] == [429, 429]


def test_a_truncated_image_cache_entry_is_a_miss_and_is_drawn_again(server, api_key, tmp_path, caplog):
    def client():
        return ImageClient(server.base_url, api_key_env="VISALIGN_TEST_API_KEY", model="m", cache_dir=tmp_path)

    whole = run_all([client().generate("a quiet harbour", size="32x32", seed=3)], show_progress=False)[0].png_bytes
    [entry] = list(tmp_path.rglob("*.bin"))
    entry.write_bytes(whole[: len(whole) // 2])  # an interrupted copy of the cache
    with caplog.at_level(logging.WARNING, logger="visalign.clients"):
        again = run_all([client().generate("a quiet harbour", size="32x32", seed=3)], show_progress=False)[0]
    assert again.png_bytes == whole == render_png("a quiet harbour", 3, "32x32") and again.cached is False
    assert len(server.requests_to(IMAGES_PATH)) == 2 and entry.read_bytes() == whole  # the entry is whole again
    assert f"{entry}: cached image does not decode" in caplog.text
    # the repaired entry is served from the cache again
    third = run_all([client().generate("a quiet harbour", size="32x32", seed=3)], show_progress=False)[0]
    assert third.cached is True and third.png_bytes == whole and len(server.requests_to(IMAGES_PATH)) == 2


def test_to_png_drops_bytes_after_the_iend_chunk():
    whole = render_png("a quiet harbour", 3, "48x32")
    padded = whole + b"\0" * 16  # padding some encoders and CDNs append; Pillow reads the image fine
    fixed = to_png(padded, origin="test")
    assert fixed.endswith(PNG_END) and fixed.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(fixed)) as a, Image.open(io.BytesIO(whole)) as b:
        assert a.size == b.size == (48, 32) and a.mode == b.mode and a.tobytes() == b.tobytes()
    assert to_png(whole, origin="test") == whole  # an intact PNG is returned unchanged
