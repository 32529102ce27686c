"""Chat completions against any OpenAI-compatible endpoint (OpenAI, DeepSeek, vLLM, llama.cpp, Ollama).

Our own retry loop around `AsyncOpenAI` (whose built-in retries are off): a timeout per call, exponential backoff
with jitter, a 429's Retry-After respected, client errors (401, 400, ...) not retried. Token usage is counted so
rooms can be held to a budget and the totals reported.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMConfig:
    model: str
    base_url: str | None = None
    api_key: str = ""
    temperature: float = 0.2
    max_tokens: int = 1500
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0
    json_mode: bool = True  # ask for response_format json_object (OpenAI, DeepSeek, vLLM, llama.cpp, Ollama)


class LLMError(RuntimeError):
    """The LLM could not give an answer (after retries); the message says why in one line."""


@dataclass
class Usage:
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LLMClient:
    def __init__(self, config: LLMConfig, concurrency: int = 2):
        """`concurrency`: calls in flight at once, server-wide (the others wait their turn): however many rooms and
        visitors ask at once, the endpoint — often a local model sharing the machine's cores — sees a bounded load."""
        from openai import AsyncOpenAI

        self.config = config
        self.usage = Usage()
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self.waiting = 0  # calls waiting for a slot, for /metrics
        self._client = AsyncOpenAI(base_url=config.base_url or None, api_key=config.api_key or "not-needed",
                                   timeout=config.timeout_s, max_retries=0)

    async def complete(self, messages: list[dict[str, str]], json_mode: bool | None = None,
                       stream: bool = False, max_tokens: int | None = None) -> tuple[str, int]:
        """The answer's text and the tokens it cost. With `stream`, the answer arrives as server-sent chunks: a
        stalled generation is caught by the read timeout between chunks rather than only at the end. `max_tokens`
        caps this answer below the configured maximum."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            return await self._complete(messages, json_mode, stream, min(max_tokens or self.config.max_tokens,
                                                                       self.config.max_tokens))
        finally:
            self._slots.release()

    async def _complete(self, messages: list[dict[str, str]], json_mode: bool | None, stream: bool,
                        max_tokens: int) -> tuple[str, int]:
        import openai

        cfg = self.config
        want_json = cfg.json_mode if json_mode is None else json_mode
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if want_json else {}
        if stream:
            extra.update(stream=True, stream_options={"include_usage": True})
        last = "no attempt"
        for attempt in range(cfg.retries + 1):
            self.usage.calls += 1
            try:
                response = await self._client.chat.completions.create(
                    model=cfg.model, messages=messages, temperature=cfg.temperature, max_tokens=max_tokens,
                    **extra)
                if stream:
                    return await self._collect(response)
                tokens = 0
                if response.usage is not None:
                    self.usage.prompt_tokens += response.usage.prompt_tokens or 0
                    self.usage.completion_tokens += response.usage.completion_tokens or 0
                    tokens = response.usage.total_tokens or 0
                if not response.choices or response.choices[0].message.content is None:
                    raise LLMError("the answer has no content")
                return response.choices[0].message.content, tokens
            except openai.RateLimitError as exc:
                self.usage.errors += 1
                last = "rate limited (429)"
                delay = _retry_after(exc) or self._backoff(attempt)
            except (openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError) as exc:
                self.usage.errors += 1
                last = f"{type(exc).__name__}"
                delay = self._backoff(attempt)
            except openai.APIStatusError as exc:
                self.usage.errors += 1
                raise LLMError(f"the LLM endpoint refused the request ({exc.status_code})") from None
            except (openai.OpenAIError, ValueError) as exc:  # undecodable responses and the like
                self.usage.errors += 1
                last = f"{type(exc).__name__}"
                delay = self._backoff(attempt)
            if attempt < cfg.retries:
                log.info("LLM call failed (%s); retrying in %.1f s", last, delay)
                await asyncio.sleep(delay)
        raise LLMError(f"the LLM failed {cfg.retries + 1} times; last: {last}")

    async def _collect(self, chunks: Any) -> tuple[str, int]:
        parts: list[str] = []
        tokens = 0
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if getattr(chunk, "usage", None):
                self.usage.prompt_tokens += chunk.usage.prompt_tokens or 0
                self.usage.completion_tokens += chunk.usage.completion_tokens or 0
                tokens = chunk.usage.total_tokens or 0
        if not parts:
            raise LLMError("the streamed answer was empty")
        return "".join(parts), tokens

    def _backoff(self, attempt: int) -> float:
        delay = min(30.0, self.config.backoff_s * 2 ** attempt)
        return delay + random.uniform(0, delay / 2)

    async def close(self) -> None:
        await self._client.close()


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
