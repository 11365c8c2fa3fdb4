"""The API key from the environment: a trailing CR/LF stripped, a key no header can carry refused, never shown.

The key must not reach an exception, a log line or a stage record, even in the escaped form httpx quotes it in.
"""

import logging

import pytest

from visalign.clients import ChatClient, ClientError, ImageClient, run_all
from visalign.clients.errors import redact
from visalign.errors import VisalignError
from visalign.testing import CHAT_PATH

ENV = "VISALIGN_TEST_API_KEY"
API_KEY = "sk-standin-SECRET-4f9a1c2e7b8d"  # as in conftest.py's ``api_key`` fixture
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n", " "])
def test_a_key_ending_in_a_line_break_is_stripped_and_sent_clean(server, monkeypatch, caplog, ending):
    # a .env file saved with CRLF line endings, or a secret made from a file, leaves "\r" or "\n" after the key
    monkeypatch.setenv(ENV, API_KEY + ending)
    client = ChatClient(server.base_url, api_key_env=ENV, max_retries=2, backoff_base_s=0.01)
    with caplog.at_level(logging.DEBUG, logger="visalign"):
        result = run_all([client.complete(HI)], show_progress=False)[0]
    assert result.text and client.usage.attempts == 1
    assert [r.authorization for r in server.requests_to(CHAT_PATH)] == [f"Bearer {API_KEY}"]
    assert API_KEY not in caplog.text and API_KEY not in repr(client)


@pytest.mark.parametrize(
    "key",
    [f"{API_KEY[:10]}\u201d{API_KEY[10:]}", f"{API_KEY[:10]} {API_KEY[10:]}", f"{API_KEY[:10]}\x07{API_KEY[10:]}"],
    ids=["smart-quote", "inner-space", "control-character"],
)
@pytest.mark.parametrize(
    "make", [ChatClient, lambda url, **kw: ImageClient(url, model="m", **kw)], ids=["chat", "image"]
)
def test_a_key_a_header_cannot_carry_is_one_line_naming_the_variable(server, monkeypatch, key, make):
    monkeypatch.setenv(ENV, key)
    with pytest.raises(VisalignError) as info:
        make(server.base_url, api_key_env=ENV)
    message = str(info.value)
    assert message.startswith(f"environment variable {ENV} holds characters an HTTP header cannot carry")
    assert "\n" not in message and API_KEY[:10] not in message and API_KEY[11:] not in message
    assert server.requests_to(CHAT_PATH) == []


def test_a_key_of_only_whitespace_is_not_set(server, monkeypatch):
    monkeypatch.setenv(ENV, " \r\n")
    with pytest.raises(VisalignError, match=f"^environment variable {ENV} is not set; export your API key"):
        ChatClient(server.base_url, api_key_env=ENV)


def test_a_header_httpx_refuses_fails_at_once_without_the_key(server, api_key, caplog):
    # defence in depth: a key that got past the check makes h11 raise LocalProtocolError, which quotes the header;
    # no retry can send it, and neither the error nor the log may show the key
    client = ChatClient(server.base_url, api_key_env=ENV, max_retries=3, backoff_base_s=0.01)
    client._api_key = API_KEY + "\r"
    with caplog.at_level(logging.DEBUG, logger="visalign"), pytest.raises(ClientError) as info:
        run_all([client.complete(HI)], show_progress=False)
    message = str(info.value)
    assert message.startswith(f"POST {server.base_url}/chat/completions: the request could not be sent "
                              "(LocalProtocolError: ")  # fmt: skip
    assert "\n" not in message and API_KEY not in message and API_KEY not in caplog.text
    assert client.usage.attempts == 1 and client.usage.retries == 0 and server.requests_to(CHAT_PATH) == []


@pytest.mark.parametrize(
    "shown",
    [
        "Illegal header value b'Bearer sk-proj-SECRET0123456789\\r'",  # h11's bytes repr: an escape, not a CR
        "value 'sk-proj-SECRET0123456789\\n' refused",  # a str repr
        'body {"key": "sk-proj-SECRET0123456789\\r\\n"}',  # JSON
        "plain sk-proj-SECRET0123456789 and sk-proj-SECRET0123456789\r",  # the stripped core, and the raw value
    ],
)
def test_redact_removes_the_escaped_and_stripped_forms_of_a_key(shown):
    for key in ("sk-proj-SECRET0123456789\r", "sk-proj-SECRET0123456789\n", "sk-proj-SECRET0123456789\r\n"):
        assert "SECRET0123456789" not in redact(shown, key), (shown, key)
    assert redact("no secret here", "sk-proj-SECRET0123456789\r") == "no secret here"
