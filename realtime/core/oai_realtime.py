"""The OpenAI Realtime *transcription* session, sans-I/O: client event JSON in, validated commands out; our VAD turns,
partials and finals in, OpenAI server events out (docs/protocol.md, "OpenAI Realtime transcription").

Mapping. An OpenAI *item* is one turn of our VAD (`server_vad`) or the audio between two client commits
(`turn_detection: null`). Deltas are the LocalAgreement-committed words of the turn's partials, never the unstable
tail, so they are append-only; `completed` is the turn's final text. A turn longer than `--max-utterance-s` is cut
by the lecture into several finals: their texts join (with a space) into the one item. The item's text is grown
only by appending (`Turn.text`), and a delta is only ever the part of it beyond what was sent, so the deltas of an
item joined are its completed transcript by construction.

`TurnSegmenter` stands in for the lecture's `Segmenter`: it passes the VAD through (or, with turn detection off,
makes one turn of all audio until a commit), tells the session of every turn start and end as the lecture sees it,
and ends a turn on request (a commit, a clear).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from realtime.core.audio import Resampler, alaw_decode, ulaw_decode
from realtime.core.protocol import LANGUAGES, MAX_PROMPT_CHARS, encodable, is_unicode

INVALID = "invalid_request_error"
SERVER_ERROR = "server_error"
LOGPROBS = "item.input_audio_transcription.logprobs"
FORMATS = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
LEGACY_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
# Client events of the GA conversation API that a transcription session does not do: answered with an error.
UNSUPPORTED_EVENTS = frozenset({"response.create", "response.cancel", "conversation.item.create",
                                "conversation.item.retrieve", "conversation.item.truncate",
                                "conversation.item.delete", "output_audio_buffer.clear"})
MIN_COMMIT_S = 0.1  # OpenAI refuses to commit less than 100 ms of audio


class OaiError(Exception):
    """A client event the session refuses: becomes an `error` event; the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None, kind: str = INVALID):
        super().__init__(message)
        self.code, self.message, self.param, self.kind = code, message, param, kind
        self.event_id: str | None = None


# ---------------------------------------------------------------- the session's configuration


@dataclass(frozen=True)
class Vad:
    """`server_vad`. Our segmenter: threshold = the Silero speech probability a frame needs (same meaning, same
    default 0.5; with --no-vad-silero webrtcvad alone decides and threshold is not used), prefix_padding_ms = the
    pre-roll, silence_duration_ms = the hangover."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class Config:
    format: str = "audio/pcm"
    model: str = "whisper-1"  # echoed only: the server's own model decodes
    language: str | None = None
    prompt: str = ""
    turn_detection: Vad | None = field(default_factory=Vad)
    logprobs: bool = False


def _get(obj: dict, key: str, param: str) -> dict | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        raise OaiError("invalid_type", f"{param} must be an object", param)
    return value


def _number(raw: dict, key: str, param: str, lo: float, hi: float, default: float) -> float:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not (lo <= value <= hi):
        raise OaiError("invalid_value", f"{param}.{key} must be a number in [{lo:g}, {hi:g}]", f"{param}.{key}")
    return value


def _vad(raw: Any, current: Vad | None, param: str) -> Vad | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise OaiError("invalid_type", f"{param} must be an object or null", param)
    kind = raw.get("type", "server_vad")
    if kind == "semantic_vad":
        raise OaiError("unsupported", "semantic_vad is not supported: use server_vad or null", f"{param}.type")
    if kind != "server_vad":
        raise OaiError("invalid_value", f"{param}.type must be 'server_vad'", f"{param}.type")
    for key in ("create_response", "interrupt_response", "idle_timeout_ms", "eagerness"):
        if raw.get(key) not in (None, False):
            raise OaiError("unsupported", f"{param}.{key}: a transcription session creates no responses",
                           f"{param}.{key}")
    base = current or Vad()
    return Vad(float(_number(raw, "threshold", param, 0.0, 1.0, base.threshold)),
               int(_number(raw, "prefix_padding_ms", param, 0, 2000, base.prefix_padding_ms)),
               int(_number(raw, "silence_duration_ms", param, 30, 10000, base.silence_duration_ms)))


def _transcription(raw: dict, config: Config, param: str) -> Config:
    language, prompt, model = config.language, config.prompt, config.model
    if "language" in raw:
        language = raw["language"]
        if language is not None and not isinstance(language, str):
            raise OaiError("invalid_type", f"{param}.language must be a string", f"{param}.language")
        language = (language or "").lower().split("-")[0].split("_")[0] or None
        if language is not None and language not in LANGUAGES:
            raise OaiError("invalid_value", f"{param}.language must be an ISO-639-1 code Whisper knows",
                           f"{param}.language")
    if "prompt" in raw:
        prompt = raw["prompt"] or ""
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            raise OaiError("invalid_value", f"{param}.prompt must be a string of at most {MAX_PROMPT_CHARS} "
                           "characters", f"{param}.prompt")
    if "model" in raw:
        model = raw["model"] or "whisper-1"
        if not isinstance(model, str) or len(model) > 100:
            raise OaiError("invalid_value", f"{param}.model must be a model name", f"{param}.model")
    for key in ("keywords", "languages", "delay"):
        if raw.get(key) is not None:
            raise OaiError("unsupported", f"{param}.{key} is not supported (use prompt and language)",
                           f"{param}.{key}")
    return replace(config, language=language, prompt=prompt.strip(), model=model)


def _format(raw: Any, legacy: bool, param: str) -> str:
    if legacy:
        if not isinstance(raw, str) or raw not in LEGACY_FORMATS:
            raise OaiError("invalid_value", f"{param} must be one of {sorted(LEGACY_FORMATS)}", param)
        return LEGACY_FORMATS[raw]
    if not isinstance(raw, dict) or not isinstance(raw.get("type", ""), str) or raw.get(
            "type", "audio/pcm") not in FORMATS:
        raise OaiError("invalid_value", f"{param}.type must be one of {sorted(FORMATS)}", f"{param}.type")
    kind = raw.get("type", "audio/pcm")
    if "rate" in raw and raw["rate"] != FORMATS[kind]:
        raise OaiError("invalid_value", f"{param}.rate must be {FORMATS[kind]} for {kind}", f"{param}.rate")
    return kind


def apply_update(config: Config, session: Any, legacy: bool) -> Config:
    """The config after a `session.update` (GA: `session.type` "transcription", `session.audio.input.*`) or a
    beta `transcription_session.update` (`input_audio_format`, `input_audio_transcription`, `turn_detection`).
    Only the fields present change; anything we cannot honour is refused by name, never ignored."""
    if not isinstance(session, dict):
        raise OaiError("invalid_type", "session must be an object", "session")
    if "include" in session:
        include = session["include"] or []
        if not isinstance(include, list) or any(x != LOGPROBS for x in include):
            raise OaiError("invalid_value", f"session.include may only hold {LOGPROBS!r}", "session.include")
        config = replace(config, logprobs=LOGPROBS in include)
    if legacy:
        known = {"input_audio_format", "input_audio_transcription", "turn_detection", "input_audio_noise_reduction",
                 "include", "modalities", "client_secret"}
        audio_in = {"format": session.get("input_audio_format"), "transcription": session.get(
            "input_audio_transcription"), "noise_reduction": session.get("input_audio_noise_reduction")}
        audio_in = {k: v for k, v in audio_in.items() if v is not None or k == "noise_reduction"}
        if "turn_detection" in session:
            audio_in["turn_detection"] = session["turn_detection"]
        prefix = "session"
        names = {"format": "input_audio_format", "transcription": "input_audio_transcription",
                 "turn_detection": "turn_detection", "noise_reduction": "input_audio_noise_reduction"}
    else:
        if session.get("type", "transcription") != "transcription":
            raise OaiError("unsupported", "only transcription sessions are supported (session.type "
                           "'transcription'; connect with ?intent=transcription)", "session.type")
        known = {"type", "audio", "include", "id", "object", "expires_at"}
        audio = _get(session, "audio", "session.audio") or {}
        if set(audio) - {"input"}:
            raise OaiError("unsupported", "audio output is not supported in a transcription session",
                           "session.audio.output")
        audio_in = _get(audio, "input", "session.audio.input") or {}
        prefix = "session.audio.input"
        names = {k: k for k in ("format", "transcription", "turn_detection", "noise_reduction")}
    for key in set(session) - known:
        raise OaiError("unsupported", f"session.{key} is not supported in a transcription session",
                       f"session.{key}")
    unknown = set(audio_in) - set(names)
    if unknown:
        key = sorted(unknown)[0]
        raise OaiError("unsupported", f"{prefix}.{key} is not supported", f"{prefix}.{key}")
    if audio_in.get("noise_reduction") is not None:
        raise OaiError("unsupported", "noise reduction is not supported (send null)",
                       f"{prefix}.{names['noise_reduction']}")
    if "format" in audio_in:
        config = replace(config, format=_format(audio_in["format"], legacy, f"{prefix}.{names['format']}"))
    if audio_in.get("transcription") is not None:
        raw = audio_in["transcription"]
        if not isinstance(raw, dict):
            raise OaiError("invalid_type", "transcription must be an object", f"{prefix}.{names['transcription']}")
        config = _transcription(raw, config, f"{prefix}.{names['transcription']}")
    if "turn_detection" in audio_in:
        config = replace(config, turn_detection=_vad(audio_in["turn_detection"], config.turn_detection,
                                                     f"{prefix}.{names['turn_detection']}"))
    return config


def session_object(config: Config, session_id: str, legacy: bool = False) -> dict[str, Any]:
    """The effective session, as `session.created`/`session.updated` (or the beta `transcription_session.*`)."""
    vad = config.turn_detection
    turn = None if vad is None else {"type": "server_vad", "threshold": vad.threshold,
                                     "prefix_padding_ms": vad.prefix_padding_ms,
                                     "silence_duration_ms": vad.silence_duration_ms}
    transcription = {"model": config.model, "language": config.language, "prompt": config.prompt}
    include = [LOGPROBS] if config.logprobs else []
    if legacy:
        return {"id": session_id, "object": "realtime.transcription_session", "include": include,
                "input_audio_format": {v: k for k, v in LEGACY_FORMATS.items()}[config.format],
                "input_audio_transcription": transcription, "turn_detection": turn,
                "input_audio_noise_reduction": None, "modalities": ["text"]}
    fmt = {"type": config.format, **({"rate": 24000} if config.format == "audio/pcm" else {})}
    return {"id": session_id, "object": "realtime.transcription_session", "type": "transcription",
            "include": include, "audio": {"input": {"format": fmt, "transcription": transcription,
                                                    "turn_detection": turn, "noise_reduction": None}}}


class Decoder:
    """Client audio in the session's format to 16 kHz s16le (G.711 tables, polyphase resampling)."""

    def __init__(self, fmt: str):
        self.format = fmt
        self.resample = Resampler(FORMATS[fmt], 16000)
        self._odd = b""

    def __call__(self, data: bytes) -> bytes:
        if self.format == "audio/pcm":
            data, self._odd = self._odd + data, b""
            if len(data) % 2:
                data, self._odd = data[:-1], data[-1:]
            samples = np.frombuffer(data, "<i2")
        else:
            samples = (ulaw_decode if self.format == "audio/pcmu" else alaw_decode)(data)
        return self.resample(samples).astype("<i2").tobytes()


# ---------------------------------------------------------------- client events


@dataclass(frozen=True)
class Update:
    session: Any
    legacy: bool


@dataclass(frozen=True)
class Append:
    audio: bytes


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Clear:
    pass


Command = Update | Append | Commit | Clear


def parse_event(raw: str, max_bytes: int,
                command: Callable[[dict[str, Any]], Any] | None = None) -> tuple[Any, str | None]:
    """One client event: the command (`command` reads it from the JSON object: the transcription session's by
    default) and the client's `event_id`; an `OaiError` (carrying the event_id when one could be read) for anything
    else."""
    if len(raw) > max_bytes:
        raise OaiError("message_too_large", f"client events are limited to {max_bytes} bytes")
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        raise OaiError("invalid_json", "the event is not valid JSON") from None
    if not isinstance(msg, dict):
        raise OaiError("invalid_json", "the event must be a JSON object")
    event_id = msg.get("event_id")
    if not (isinstance(event_id, str) and len(event_id) <= 200 and is_unicode(event_id)):
        event_id = None  # echoed into errors, so only one that can be sent back
    try:
        if "\\u" in raw and not encodable(msg):
            raise OaiError("invalid_value", "strings must be valid Unicode (a \\u escape spelled a lone surrogate)")
        return (command or _command)(msg), event_id
    except OaiError as exc:
        exc.event_id = event_id
        raise


def _command(msg: dict[str, Any]) -> Command:
    kind = msg.get("type")
    if kind in ("session.update", "transcription_session.update"):
        if "session" not in msg:
            raise OaiError("missing_required_parameter", "missing required parameter 'session'", "session")
        return Update(msg["session"], kind == "transcription_session.update")
    if kind == "input_audio_buffer.append":
        audio = msg.get("audio")
        if not isinstance(audio, str):
            raise OaiError("missing_required_parameter", "audio must be a base64 string", "audio")
        try:
            return Append(base64.b64decode(audio, validate=True))
        except (binascii.Error, ValueError):
            raise OaiError("invalid_value", "audio is not valid base64", "audio") from None
    if kind == "input_audio_buffer.commit":
        return Commit()
    if kind == "input_audio_buffer.clear":
        return Clear()
    if not isinstance(kind, str):
        raise OaiError("missing_required_parameter", "the event needs a string 'type'", "type")
    if kind in UNSUPPORTED_EVENTS:
        raise OaiError("unsupported", f"{kind} is not supported: this is a transcription session", "type")
    raise OaiError("invalid_value", f"unknown event type {kind[:60]!r}", "type")


def error_event(exc: OaiError, event_id: str) -> dict[str, Any]:
    return {"type": "error", "event_id": event_id, "error": {"type": exc.kind, "code": exc.code,
                                                             "message": exc.message, "param": exc.param,
                                                             "event_id": exc.event_id}}
