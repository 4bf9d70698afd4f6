"""vipo.critics.openai without a network: ``urllib.request.urlopen`` replaced by a scripted transport, ``time.sleep``
by a recorder. What is sent (URL, headers, body), what is read back, and the retry and backoff rules."""

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from vipo.critics import openai
from vipo.critics.llm import Query
from vipo.critics.openai import OpenAICritic, data_url
from vipo.critics.options import OpenAIOptions
from vipo.errors import UserError

URL = "http://judge.invalid/v1"


def critic(**kw):
    opts = dict(base_url=URL + "/", model="qwen-vl", backoff_s=0.5, http_retries=3, concurrency=1)
    return OpenAICritic(OpenAIOptions(**{**opts, **kw}))


def ok(content):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


def http_error(code, body=b"", retry_after=None):
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return urllib.error.HTTPError(URL, code, "scripted", headers, io.BytesIO(body))


class Transport:
    """Each call to urlopen takes the next scripted step: bytes to answer with, or an exception to raise."""

    def __init__(self, *steps):
        self.steps, self.requests = list(steps), []

    def __call__(self, req, timeout):
        self.requests.append({"url": req.full_url, "headers": dict(req.header_items()), "body": req.data})
        self.timeout = timeout
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return io.BytesIO(step)  # a context manager with read(), like the real response


@pytest.fixture()
def sleeps(monkeypatch):
    got = []
    monkeypatch.setattr(openai.time, "sleep", got.append)
    return got


def install(monkeypatch, *steps):
    t = Transport(*steps)
    monkeypatch.setattr(urllib.request, "urlopen", t)
    return t


def query(text="How is it?"):
    return Query("be a critic", [np.full((2, 3, 3), 200, np.uint8), text])


def test_data_url_png_round_trips_the_pixels():
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    url = data_url(img)
    assert url.startswith("data:image/png;base64,")
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert back.shape == (4, 5, 3) and np.array_equal(back, img)  # PNG is lossless


def test_data_url_jpeg_is_a_jpeg():
    url = data_url(np.full((8, 8, 3), 128, np.uint8), "jpeg")
    assert url.startswith("data:image/jpeg;base64,")
    raw = base64.b64decode(url.split(",", 1)[1])
    assert raw[:3] == b"\xff\xd8\xff" and Image.open(io.BytesIO(raw)).format == "JPEG"


def test_body_keeps_the_parts_in_order_as_text_and_images():
    c = critic(max_tokens=77, temperature=0.25, image_format="jpeg")
    q = Query("sys", ["Video A:", np.zeros((2, 2, 3), np.uint8), "Video B:", np.zeros((2, 2, 3), np.uint8), "ask"])
    body = c.body(q)
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("qwen-vl", 77, 0.25)
    system, user = body["messages"]
    assert system == {"role": "system", "content": "sys"} and user["role"] == "user"
    assert [p["type"] for p in user["content"]] == ["text", "image_url", "text", "image_url", "text"]
    assert [p["text"] for p in user["content"] if p["type"] == "text"] == ["Video A:", "Video B:", "ask"]
    assert user["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_a_request_is_posted_as_json_to_chat_completions(monkeypatch, sleeps):
    t = install(monkeypatch, ok("Verdict: Good"))
    assert critic(timeout_s=9.0).complete([query()]) == ["Verdict: Good"]
    (r,) = t.requests
    assert r["url"] == URL + "/chat/completions"  # the trailing slash of base_url dropped
    assert r["headers"]["Content-type"] == "application/json" and "Authorization" not in r["headers"]
    assert json.loads(r["body"])["messages"][1]["content"][-1] == {"type": "text", "text": "How is it?"}
    assert t.timeout == 9.0 and sleeps == []


def test_the_api_key_goes_in_the_authorization_header_only(monkeypatch, sleeps):
    monkeypatch.setenv("VIPO_UNIT_KEY", "sk-unit-secret")
    t = install(monkeypatch, ok("fine"))
    critic(api_key_env="VIPO_UNIT_KEY").complete([query()])
    (r,) = t.requests
    assert r["headers"]["Authorization"] == "Bearer sk-unit-secret"
    assert b"sk-unit-secret" not in r["body"]


def test_an_unset_key_variable_is_refused_naming_it(monkeypatch):
    monkeypatch.delenv("VIPO_UNIT_NOPE", raising=False)
    with pytest.raises(UserError) as e:
        critic(api_key_env="VIPO_UNIT_NOPE")
    assert str(e.value) == "judge.api_key_env: the environment variable VIPO_UNIT_NOPE is not set"


def test_content_in_parts_is_joined_and_none_is_empty(monkeypatch, sleeps):
    parts = [{"type": "text", "text": "Verdict: "}, "junk", {"type": "image"}, {"type": "text", "text": "Bad"}]
    install(monkeypatch, ok(parts), ok(None))
    assert critic().complete([query(), query()]) == ["Verdict: Bad", ""]


def test_429_and_5xx_are_retried_with_doubling_backoff_and_retry_after(monkeypatch, sleeps):
    install(
        monkeypatch,
        http_error(503),
        http_error(502),
        http_error(429, retry_after="7"),
        ok("Verdict: Normal"),
    )
    assert critic(backoff_s=0.5, http_retries=3).complete([query()]) == ["Verdict: Normal"]
    # attempt 2 waits backoff_s, attempt 3 twice that, attempt 4 the server's Retry-After
    assert sleeps == [0.5, 1.0, 7.0]


def test_backoff_and_retry_after_are_capped_at_a_minute(monkeypatch, sleeps):
    install(monkeypatch, *[http_error(500)] * 4, ok("x"))
    critic(backoff_s=20, http_retries=4).complete([query()])
    assert sleeps == [20, 40, 60, 60]  # 80 capped
    sleeps.clear()
    install(monkeypatch, http_error(429, retry_after="3600"), http_error(429, retry_after="soon"), ok("x"))
    critic(backoff_s=2, http_retries=2).complete([query()])
    assert sleeps == [60, 4]  # an unreadable Retry-After falls back to the backoff


def test_transport_failures_are_retried_then_returned_as_the_last_error(monkeypatch, sleeps):
    t = install(
        monkeypatch,
        urllib.error.URLError("connection refused"),
        TimeoutError("timed out"),
        b"this is not json",
        ok("unused"),
    )
    (got,) = critic(http_retries=2, backoff_s=0).complete([query()])
    assert isinstance(got, RuntimeError)  # returned in its place, not raised
    assert str(got).startswith("malformed response (JSONDecodeError")
    assert len(t.requests) == 3 and len(t.steps) == 1


def test_a_non_chat_completions_answer_is_malformed(monkeypatch, sleeps):
    install(monkeypatch, b'{"error": "no choices"}')
    (got,) = critic(http_retries=0).complete([query()])
    assert str(got) == "malformed response (KeyError: 'choices')"
    install(monkeypatch, http_error(500))
    (got,) = critic(http_retries=0).complete([query()])
    assert str(got) == "HTTP 500"


@pytest.mark.parametrize("code", [400, 401, 404])
def test_other_http_errors_stop_at_once_in_one_line(monkeypatch, sleeps, code):
    t = install(monkeypatch, http_error(code, b'{"error": "model qwen-vl not found"}\n'), ok("unused"))
    with pytest.raises(UserError) as e:
        critic().complete([query()])
    assert str(e.value) == (
        f'openai critic: {URL}/chat/completions answered HTTP {code} ({{"error": "model qwen-vl not found"}})'
    )
    assert len(t.requests) == 1 and sleeps == []
    install(monkeypatch, http_error(code))
    with pytest.raises(UserError, match=rf"answered HTTP {code} \(scripted\)$"):  # no body: the reason phrase
        critic().complete([query()])


def test_answers_come_back_in_the_order_asked_under_concurrency(monkeypatch):
    import threading
    import time

    lock, flying, most = threading.Lock(), [0], [0]

    def echo(req, timeout):
        text = json.loads(req.data)["messages"][1]["content"][-1]["text"]
        with lock:
            flying[0] += 1
            most[0] = max(most[0], flying[0])
        time.sleep(0.01 * (6 - int(text[1:])))  # later questions answer sooner
        with lock:
            flying[0] -= 1
        return io.BytesIO(ok(f"answer to {text}"))

    monkeypatch.setattr(urllib.request, "urlopen", echo)
    got = critic(concurrency=3).complete([query(f"q{i}") for i in range(6)])
    assert got == [f"answer to q{i}" for i in range(6)]
    assert 1 < most[0] <= 3  # several requests in flight at once, never more than concurrency


def test_seconds_reads_retry_after():
    assert openai._seconds("3") == 3.0 and openai._seconds("0.5") == 0.5
    assert openai._seconds("-4") == 0.0  # never a negative wait
    assert openai._seconds(None) is None and openai._seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
