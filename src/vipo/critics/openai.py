"""The ``openai`` critic: the LLM critic's questions sent to an OpenAI-compatible chat-completions endpoint.

Any server speaking ``POST {base_url}/chat/completions`` works: vLLM (``vllm serve Qwen/Qwen2.5-VL-7B-Instruct``),
SGLang, hosted APIs. Frames go as base64 ``data:`` URL images (``image_url`` content parts). Standard library only.

- ``concurrency`` requests are in flight at once (threads);
- a timeout, a dropped connection, HTTP 429 or 5xx is retried ``http_retries`` times with exponential backoff
  (``backoff_s``, doubled each time, at most 60 s; a ``Retry-After`` header is honoured); what still fails is an
  unanswered question, which the LLM critic's own retries and the judge stage's unparseable threshold handle;
- any other HTTP error (401, 404: a wrong key, URL or model name) stops the stage at once with one line;
- the API key is read from the environment variable named by ``api_key_env`` and only ever put in the request's
  Authorization header: never in a message, log line, record or config.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from ..errors import UserError
from .llm import LLMCritic, Query
from .options import OpenAIOptions

log = logging.getLogger(__name__)
MAX_BACKOFF = 60.0


def data_url(image: np.ndarray, fmt: str = "png") -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(
        buf, format="PNG" if fmt == "png" else "JPEG", **({} if fmt == "png" else {"quality": 90})
    )
    return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class OpenAICritic(LLMCritic):
    name = "openai"
    Options = OpenAIOptions
    served = True

    def __init__(self, cfg: OpenAIOptions):
        super().__init__(cfg)
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
            raise UserError(f"judge.api_key_env: the environment variable {cfg.api_key_env} is not set")

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[self.cfg.api_key_env]}"
        return headers

    def body(self, q: Query) -> dict:
        content = [
            {"type": "text", "text": p}
            if isinstance(p, str)
            else {"type": "image_url", "image_url": {"url": data_url(p, self.cfg.image_format)}}
            for p in q.parts
        ]
        return {
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
            "messages": [{"role": "system", "content": q.system}, {"role": "user", "content": content}],
        }

    def complete(self, queries: list[Query]) -> list[str | Exception]:
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            return list(pool.map(self._one, queries))

    def _one(self, q: Query) -> str | Exception:
        data = json.dumps(self.body(q)).encode()
        last: Exception = RuntimeError("no attempt")
        for attempt in range(self.cfg.http_retries + 1):
            if attempt:
                delay = min(MAX_BACKOFF, self.cfg.backoff_s * 2 ** (attempt - 1))
                retry_after = getattr(last, "retry_after", None)
                time.sleep(min(MAX_BACKOFF, retry_after) if retry_after is not None else delay)
            req = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    payload = json.loads(resp.read())
                return _content(payload)
            except urllib.error.HTTPError as e:
                if e.code != 429 and e.code < 500:
                    detail = e.read()[:300].decode("utf-8", "replace").strip()
                    raise UserError(
                        f"openai critic: {self.url} answered HTTP {e.code} ({detail or e.reason})"
                    ) from None
                last = RuntimeError(f"HTTP {e.code}")
                last.retry_after = _seconds(e.headers.get("Retry-After"))  # type: ignore[attr-defined]
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = RuntimeError(f"{type(e).__name__}: {getattr(e, 'reason', e)}")
            except (ValueError, KeyError, IndexError, TypeError) as e:  # not a chat-completions answer
                last = RuntimeError(f"malformed response ({type(e).__name__}: {e})")
            log.debug("openai critic: attempt %d failed: %s", attempt + 1, last)
        log.warning("openai critic: no answer after %d attempts: %s", self.cfg.http_retries + 1, last)
        return last


def _content(payload: dict) -> str:
    content = payload["choices"][0]["message"]["content"]
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
