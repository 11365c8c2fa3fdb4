import io

import pytest
from PIL import Image

from visalign.clients import ClientError, ImageClient, InvalidImageError, run_all, to_png
from visalign.testing import IMAGES_PATH, Fault, render_png


def make_client(server, **kwargs):
    settings = {"api_key_env": "VISALIGN_TEST_API_KEY", "model": "seedream-stand-in", "backoff_base_s": 0.02}
    settings.update(kwargs)
    return ImageClient(server.base_url, **settings)


def generate(client, prompt="a flooded street at night", **kwargs):
    return run_all([client.generate(prompt, **kwargs)], show_progress=False)[0]


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_generate_returns_the_png_the_server_drew(server, api_key, response_format):
    client = make_client(server, response_format=response_format, price_per_image=0.03)
    result = generate(client, size="96x64", seed=5)
    assert result.png_bytes == render_png("a flooded street at night", 5, "96x64")
    with Image.open(io.BytesIO(result.png_bytes)) as image:
        assert image.size == (96, 64) and image.format == "PNG"
    assert result.revised_prompt == "a flooded street at night (stand-in)"
    assert result.cost_usd == pytest.approx(0.03) and result.cached is False
    [post] = server.requests_to(IMAGES_PATH)
    assert post.body == {
        "model": "seedream-stand-in",
        "prompt": "a flooded street at night",
        "size": "96x64",
        "n": 1,
        "response_format": response_format,
        "seed": 5,
    }
    assert client.usage.images == 1 and client.usage.cost_usd == pytest.approx(0.03)


def test_url_download_drops_key_and_signature(server, api_key):
    result = generate(make_client(server, response_format="url"), size="32x32")
    downloads = [r for r in server.requests if r.method == "GET"]
    assert len(downloads) == 1
    assert downloads[0].authorization is None  # the key is never sent to the image host
    assert result.source_url == f"{server.root_url}{downloads[0].path}"
    assert "Signature" not in result.source_url


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_corrupt_image_is_an_error_for_that_record_without_retry(server, api_key, response_format):
    server.inject(Fault("corrupt_image"))
    client = make_client(server, response_format=response_format)
    with pytest.raises(InvalidImageError, match="not a valid image"):
        generate(client, size="32x32")
    assert len(server.requests_to(IMAGES_PATH)) == 1
    assert client.usage.failures == 1 and client.usage.images == 1  # the failed generation was still paid


def test_wrong_content_type_is_refused(server, api_key):
    server.inject(Fault("wrong_content_type"))
    with pytest.raises(InvalidImageError, match="content type 'text/html' is not an image"):
        generate(make_client(server, response_format="url"), size="32x32")


def test_download_size_limit(server, api_key):
    with pytest.raises(InvalidImageError, match="over the 100-byte limit"):
        generate(make_client(server, response_format="url", max_download_bytes=100), size="64x64")


def test_image_request_retries_then_succeeds(server, api_key):
    server.inject(Fault("500"), Fault("truncated_json"))
    result = generate(make_client(server), size="16x16", seed=1)
    assert result.png_bytes == render_png("a flooded street at night", 1, "16x16")
    assert [r.status for r in server.requests_to(IMAGES_PATH)] == [500, 200, 200]


def test_image_cache_survives_a_new_client(server, api_key, tmp_path):
    first = generate(make_client(server, cache_dir=tmp_path, response_format="url"), size="32x32", seed=2)
    again_client = make_client(server, cache_dir=tmp_path, response_format="url")
    again = generate(again_client, size="32x32", seed=2)
    assert len(server.requests_to(IMAGES_PATH)) == 1
    assert again.cached is True and again.png_bytes == first.png_bytes and again.cost_usd == 0.0
    assert again.source_url == first.source_url and again.sha256 == first.sha256
    assert again_client.usage.images == 0 and again_client.usage.cached == 1


def test_unreachable_image_endpoint(api_key):
    client = ImageClient("http://127.0.0.1:9/v1", api_key_env=None, max_retries=0)
    with pytest.raises(ClientError, match=r"POST http://127.0.0.1:9/v1/images/generations failed after 1 attempts"):
        generate(client)


def test_to_png_converts_jpeg_and_rejects_garbage():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buffer, format="JPEG")
    png = to_png(buffer.getvalue(), origin="test")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (40, 30)
        assert abs(image.getpixel((20, 15))[1] - 200) < 8
    with pytest.raises(InvalidImageError, match="origin-x: backend returned bytes"):
        to_png(b"GIF89a garbage", origin="origin-x")
    with pytest.raises(InvalidImageError, match="over 100 pixels"):
        to_png(png, origin="big", max_pixels=100)


def test_image_url_that_redirects_forever_is_an_invalid_image_not_an_httpx_error(server, api_key):
    server.inject(Fault("redirect_loop", path=IMAGES_PATH))
    client = make_client(server, response_format="url")
    with pytest.raises(InvalidImageError, match=r"GET http://127\.0\.0\.1:\d+/loop/\w+\.png: too many redirects"):
        generate(client)
    loops = [r for r in server.requests if r.path.startswith("/loop/")]
    assert len(server.requests_to(IMAGES_PATH)) == 1
    assert len(loops) == 21  # httpx's 20 redirects after the first GET, and no retry
