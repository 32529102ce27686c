"""Chat completions against any OpenAI-compatible endpoint (OpenAI, DeepSeek, vLLM, llama.cpp, Ollama).

Our own retry loop around `AsyncOpenAI` (whose built-in retries are off): a timeout per call, exponential backoff
with jitter, a 429's Retry-After respected, client errors (401, 400, ...) not retried. Token usage is counted so
rooms can be held to a budget and the totals reported.

Structured answers are negotiated per endpoint: an answer schema goes as `response_format` `json_schema` (strict);
an endpoint that refuses that (a 400 or 422 naming the response format, as DeepSeek and older servers answer) is
asked again at once with `json_object`, then with the prompt alone, and the client remembers what the endpoint
refused, so later calls start with the mode it takes. An answer cut off at `max_tokens` (finish_reason "length")
of a JSON request is `LLMTruncated`, not a retry: the same request would be cut off again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# How a JSON answer is asked for, best first: a schema the endpoint enforces, any JSON object, the prompt alone.
MODES = ("json_schema", "json_object", "prompt")
_FORMAT_WORDS = ("response_format", "response format", "json_schema", "json schema", "json_object",
                 "structured output")


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
    json_mode: bool = True  # ask for a JSON response_format (negotiated: json_schema, json_object, none)


class LLMError(RuntimeError):
    """The LLM could not give an answer (after retries); the message says why in one line."""


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # prompt + completion, as the endpoint reported them (0: not reported)
    finish_reason: str | None  # "stop", "length", ... as the endpoint said
    mode: str  # how the answer was asked for: "json_schema", "json_object" or "prompt"


class LLMTruncated(LLMError):
    """A JSON answer that hit `max_tokens` (finish_reason "length"): cut off, so not usable; what it cost is in
    `completion`."""

    def __init__(self, message: str, completion: Completion):
        super().__init__(message)
        self.completion = completion


@dataclass
class Usage:
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: int = 0  # JSON answers cut off at max_tokens

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
        self.refused: list[str] = []  # response formats this endpoint refused, in the order it did
        self._client = AsyncOpenAI(base_url=config.base_url or None, api_key=config.api_key or "not-needed",
                                   timeout=config.timeout_s, max_retries=0)

    @property
    def mode(self) -> str:
        """How this endpoint is asked for a schema's answer now: the best mode it has not refused."""
        return next(m for m in MODES if m not in self.refused)

    async def complete(self, messages: list[dict[str, str]], json_mode: bool | None = None,
                       stream: bool = False, max_tokens: int | None = None) -> tuple[str, int]:
        """The answer's text and the tokens it cost (`chat` without a schema)."""
        answer = await self.chat(messages, json_mode=json_mode, stream=stream, max_tokens=max_tokens)
        return answer.text, answer.tokens

    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   schema_name: str = "answer", json_mode: bool | None = None, stream: bool = False,
                   max_tokens: int | None = None, temperature: float | None = None,
                   on_text: Callable[[str], None] | None = None) -> Completion:
        """One answer. With `schema` (a JSON schema of the answer) it is asked for as a strict `json_schema`
        response format where the endpoint takes it; with `json_mode` as any JSON object; else as text. With
        `stream`, the answer arrives as server-sent chunks: a stalled generation is caught by the read timeout
        between chunks rather than only at the end. `max_tokens` caps this answer below the configured maximum;
        `temperature` replaces the configured one for this answer (0 where only fidelity counts: translations).
        `on_text` (with `stream`) is told each piece of the answer as it arrives (a recap streamed to a reader).
        Raises LLMError, LLMTruncated for a JSON answer cut off at `max_tokens`."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            return await self._complete(messages, schema, schema_name, json_mode, stream,
                                        min(max_tokens or self.config.max_tokens, self.config.max_tokens),
                                        self.config.temperature if temperature is None else temperature, on_text)
        finally:
            self._slots.release()

    def _mode_for(self, schema: dict[str, Any] | None, json_mode: bool | None) -> str:
        if not (self.config.json_mode if json_mode is None else json_mode):
            return "prompt"
        if schema is None:
            return "prompt" if "json_object" in self.refused else "json_object"
        return self.mode

    async def _complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None, schema_name: str,
                        json_mode: bool | None, stream: bool, max_tokens: int, temperature: float,
                        on_text: Callable[[str], None] | None = None) -> Completion:
        import openai

        cfg = self.config
        mode = self._mode_for(schema, json_mode)
        wants_json = schema is not None or bool(cfg.json_mode if json_mode is None else json_mode)  # cut off: useless
        last = "no attempt"
        attempt = 0
        while True:
            extra: dict[str, Any] = {}
            if mode == "json_schema":
                extra["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": schema_name, "schema": schema, "strict": True}}
            elif mode == "json_object":
                extra["response_format"] = {"type": "json_object"}
            if stream:
                extra.update(stream=True, stream_options={"include_usage": True})
            self.usage.calls += 1
            try:
                response = await self._client.chat.completions.create(
                    model=cfg.model, messages=messages, temperature=temperature, max_tokens=max_tokens,
                    **extra)
                answer = await self._collect(response, mode, on_text) if stream else self._read(response, mode)
                if answer.finish_reason == "length" and wants_json:
                    self.usage.truncated += 1
                    raise LLMTruncated(f"the answer was cut off at max_tokens ({max_tokens})", answer)
                return answer
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
                if mode != "prompt" and _refuses_format(exc):
                    if mode not in self.refused:
                        self.refused.append(mode)
                        log.warning("the LLM endpoint refused response_format %s (%s); asking with %s from now on",
                                    mode, exc.status_code, self._mode_for(schema, json_mode))
                    mode = self._mode_for(schema, json_mode)
                    continue  # at once, and not a retry: the request was refused, not failed
                raise LLMError(f"the LLM endpoint refused the request ({exc.status_code})") from None
            except LLMError:
                raise
            except (openai.OpenAIError, ValueError) as exc:  # undecodable responses and the like
                self.usage.errors += 1
                last = f"{type(exc).__name__}"
                delay = self._backoff(attempt)
            if attempt >= cfg.retries:
                raise LLMError(f"the LLM failed {cfg.retries + 1} times; last: {last}")
            log.info("LLM call failed (%s); retrying in %.1f s", last, delay)
            await asyncio.sleep(delay)
            attempt += 1

    def _read(self, response: Any, mode: str) -> Completion:
        tokens = 0
        if response.usage is not None:
            self.usage.prompt_tokens += response.usage.prompt_tokens or 0
            self.usage.completion_tokens += response.usage.completion_tokens or 0
            tokens = response.usage.total_tokens or 0
        choice = response.choices[0] if response.choices else None
        finish = getattr(choice, "finish_reason", None)
        if choice is None or choice.message.content is None:
            if finish == "length":
                return Completion("", tokens, finish, mode)
            raise LLMError("the answer has no content")
        return Completion(choice.message.content, tokens, finish, mode)

    async def _collect(self, chunks: Any, mode: str, on_text: Callable[[str], None] | None = None) -> Completion:
        parts: list[str] = []
        tokens = 0
        finish = None
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
                if on_text is not None:
                    on_text(parts[-1])
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if getattr(chunk, "usage", None):
                self.usage.prompt_tokens += chunk.usage.prompt_tokens or 0
                self.usage.completion_tokens += chunk.usage.completion_tokens or 0
                tokens = chunk.usage.total_tokens or 0
        if not parts and finish != "length":
            raise LLMError("the streamed answer was empty")
        return Completion("".join(parts), tokens, finish, mode)

    def _backoff(self, attempt: int) -> float:
        delay = min(30.0, self.config.backoff_s * 2 ** attempt)
        return delay + random.uniform(0, delay / 2)

    async def close(self) -> None:
        await self._client.close()


def _refuses_format(exc: Any) -> bool:
    """A 400 or 422 that names the response format: the endpoint does not take that mode (DeepSeek: "This
    response_format type is unavailable now"; older vLLM, llama.cpp and Ollama builds: json_schema unknown)."""
    if getattr(exc, "status_code", None) not in (400, 422):
        return False
    try:
        text = f"{getattr(exc, 'message', '')} {json.dumps(getattr(exc, 'body', None), default=str)}".lower()
    except (TypeError, ValueError):
        text = str(exc).lower()
    return any(word in text for word in _FORMAT_WORDS)


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
