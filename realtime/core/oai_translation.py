"""The text side of OpenAI's Realtime *translation* session, sans-I/O (docs/protocol.md, "OpenAI Realtime
translation"): client events in, validated commands out; the transcription session's item events, our finals and
their translations in, translation-session events out.

Mapping. The session is a room's speaker, decoded as the transcription session is (`oai_realtime`, `oai_turns`).
- `session.input_transcript.delta` (only once `audio.input.transcription` is set, as OpenAI does) is the room's
  committed words: the transcription items' deltas run together into one append-only text, with the space between
  items that OpenAI's deltas carry themselves ("clients should not insert unconditional spaces").
- `session.output_transcript.delta` is the room's caption translation into `audio.output.language`, one delta per
  final, in the finals' order: a translation that arrives before an earlier line's waits for it, and a line that
  could not be translated (an LLM outage, a spent budget) is left out with an `error` event naming it, so what was
  sent is never taken back.
- `elapsed_ms` is the line's end on the session's audio clock, in OpenAI's 200 ms frames.
- There is no translated *audio*: this server has no speech synthesis, so `session.output_audio.delta` never comes.
- `audio.input.noise_reduction` is accepted and echoed; our VAD and decoder do not use it.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from realtime.core.oai_realtime import OaiError, _get
from realtime.core.oai_realtime import parse_event as parse_oai_event
from realtime.core.protocol import Final, Translation
from realtime.core.translation import parse_language

FRAME_MS = 200  # OpenAI's translation frames: elapsed_ms advances in these steps
NOISE_TYPES = ("near_field", "far_field")


@dataclass(frozen=True)
class TConfig:
    model: str = "gpt-realtime-translate"  # echoed: set at connection (?model=), our own models do the work
    language: str | None = None  # audio.output.language, our code ("zh"); None: nothing is translated yet
    transcription: str | None = None  # audio.input.transcription.model; None: no input transcript deltas
    noise_reduction: dict[str, Any] | None = None


def apply_update(config: TConfig, session: Any) -> TConfig:
    """`session.update`: only `audio.output.language`, `audio.input.transcription` and `audio.input.noise_reduction`
    can change, as OpenAI's types say; the session's `type` and `model` cannot. OaiError for a bad value."""
    if not isinstance(session, dict):
        raise OaiError("invalid_type", "session must be an object", "session")
    for key in ("type", "model"):
        if key in session and session[key] != (config.model if key == "model" else "translation"):
            raise OaiError("invalid_value", f"session.{key} is set at creation and cannot be updated",
                           f"session.{key}")
    audio = _get(session, "audio", "session.audio") or {}
    out_cfg = _get(audio, "output", "session.audio.output") or {}
    in_cfg = _get(audio, "input", "session.audio.input") or {}
    if "language" in out_cfg:
        raw = out_cfg["language"]
        if raw is not None and not isinstance(raw, str):
            raise OaiError("invalid_type", "language must be a string", "session.audio.output.language")
        try:
            config = replace(config, language=parse_language(raw))
        except ValueError as exc:
            raise OaiError("invalid_value", str(exc), "session.audio.output.language") from None
    if "transcription" in in_cfg:
        raw = _get(in_cfg, "transcription", "session.audio.input.transcription")
        model = raw.get("model") if raw is not None else None
        if raw is not None and not (isinstance(model, str) and model.strip() and len(model) <= 100):
            raise OaiError("missing_required_parameter", "transcription needs a model, e.g. whisper-1",
                           "session.audio.input.transcription.model")
        config = replace(config, transcription=model)
    if "noise_reduction" in in_cfg:
        raw = _get(in_cfg, "noise_reduction", "session.audio.input.noise_reduction")
        if raw is not None:
            strength = raw.get("strength", 1.0 if config.noise_reduction is None else
                               config.noise_reduction.get("strength", 1.0))
            if raw.get("type") not in NOISE_TYPES:
                raise OaiError("invalid_value", f"noise_reduction.type must be one of {', '.join(NOISE_TYPES)}",
                               "session.audio.input.noise_reduction.type")
            if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= 1:
                raise OaiError("invalid_value", "noise_reduction.strength must be a number from 0 to 1",
                               "session.audio.input.noise_reduction.strength")
            raw = {"type": raw["type"], "strength": float(strength)}
        config = replace(config, noise_reduction=raw)
    return config


def session_object(config: TConfig, session_id: str, expires_at: int) -> dict[str, Any]:
    """The session as `session.created` and `session.updated` carry it (`RealtimeTranslationSession`)."""
    return {"id": session_id, "type": "translation", "model": config.model, "expires_at": expires_at,
            "audio": {"input": {"transcription": {"model": config.transcription} if config.transcription else None,
                                "noise_reduction": config.noise_reduction},
                      "output": {"language": config.language}}}


# ---------------------------------------------------------------- client events


@dataclass(frozen=True)
class TUpdate:
    session: Any


@dataclass(frozen=True)
class TAppend:
    audio: bytes


@dataclass(frozen=True)
class TClose:
    pass


def parse_event(raw: str, max_bytes: int) -> tuple[TUpdate | TAppend | TClose, str | None]:
    """One client event and its `event_id`; OaiError (carrying the event_id where one was read) otherwise."""
    return parse_oai_event(raw, max_bytes, _command)


def _command(msg: dict[str, Any]) -> TUpdate | TAppend | TClose:
    kind = msg.get("type")
    if kind == "session.update":
        if "session" not in msg:
            raise OaiError("missing_required_parameter", "missing required parameter 'session'", "session")
        return TUpdate(msg["session"])
    if kind == "session.input_audio_buffer.append":
        audio = msg.get("audio")
        if not isinstance(audio, str):
            raise OaiError("missing_required_parameter", "audio must be a base64 string", "audio")
        try:
            return TAppend(base64.b64decode(audio, validate=True))
        except (binascii.Error, ValueError):
            raise OaiError("invalid_value", "audio is not valid base64 (24 kHz PCM16 mono)", "audio") from None
    if kind == "session.close":
        return TClose()
    if not isinstance(kind, str):
        raise OaiError("missing_required_parameter", "the event needs a string 'type'", "type")
    raise OaiError("invalid_value", f"unknown event type {kind[:60]!r} (a translation session takes "
                   "session.update, session.input_audio_buffer.append and session.close)", "type")


# ---------------------------------------------------------------- server events


def _frame_ms(seconds: float) -> int:
    return max(0, int(seconds * 1000) // FRAME_MS * FRAME_MS)


def _spaced(before: str, after: str) -> bool:
    """Whether a space goes between two runs of text: not next to a character of a script written without
    spaces (CJK, kana, Thai), nor before closing punctuation."""
    if not before or not after or before[-1].isspace() or after[0].isspace():
        return False
    if unicodedata.category(after[0]) in ("Pe", "Pf", "Po"):  # closing punctuation: no space; "(" or "[": one
        return False
    return not any(unicodedata.east_asian_width(c) in "WF" or "\u0e00" <= c <= "\u0eff" for c in (before[-1],
                                                                                                  after[0]))


class TranslationText:
    """The session's two transcripts. `event_id` numbers server events; `t0` is the lecture time at which the
    session's audio begins."""

    def __init__(self, event_id: Callable[[], str], t0: float = 0.0):
        self.event_id = event_id
        self.t0 = t0
        self.config = TConfig()
        self.input_sent = ""
        self.output_sent = ""
        self._items: set[str] = set()  # transcription items that sent a delta
        self._order: list[int] = []  # finals owed in self.config.language, oldest first
        self._ends: dict[int, float] = {}  # their ends, lecture time
        self._done: dict[int, tuple[str, str]] = {}  # final id -> (translation, "") or ("", why it failed)

    @property
    def owed(self) -> int:
        return len(self._order)

    def configure(self, config: TConfig) -> None:
        """A new configuration: lines still owed in an old output language are no longer waited for."""
        if config.language != self.config.language:
            self._order.clear()
            self._ends.clear()
            self._done.clear()
        self.config = config

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "event_id": self.event_id(), **fields}

    def items(self, events: list[dict[str, Any]], elapsed_s: float) -> list[dict[str, Any]]:
        """Transcription-session events (speech turns, item deltas, completions) to input transcript deltas."""
        out = []
        for event in events:
            if event.get("type") != "conversation.item.input_audio_transcription.delta":
                continue
            delta = event["delta"]
            if event["item_id"] not in self._items:
                self._items.add(event["item_id"])
                delta = delta.lstrip()
                if _spaced(self.input_sent, delta):
                    delta = " " + delta
            self.input_sent += delta
            if self.config.transcription and delta:
                out.append(self._event("session.input_transcript.delta", delta=delta,
                                       elapsed_ms=_frame_ms(elapsed_s)))
        return out

    def final(self, final: Final) -> None:
        """A final of this session's speech: its translation is owed, in order."""
        if self.config.language is not None and final.text.strip():
            self._order.append(final.id)
            self._ends[final.id] = final.end

    def translation(self, event: Translation) -> list[dict[str, Any]]:
        """A translation published in the room: output deltas for every owed line now ready, in order, and an
        error for each one that failed."""
        if event.lang != self.config.language or event.final not in self._ends:
            return []
        ok = event.state == "done" and event.text.strip()
        self._done[event.final] = (event.text.strip(), "") if ok else ("", event.reason or "empty")
        out: list[dict[str, Any]] = []
        while self._order and self._order[0] in self._done:
            final = self._order.pop(0)
            (text, why), end = self._done.pop(final), self._ends.pop(final)
            if not text:
                out.append(self._event("error", error={
                    "type": "server_error", "code": "translation_failed", "param": None, "event_id": None,
                    "message": f"line {final} could not be translated into {self.config.language} ({why}); it "
                               "is left out of the output transcript"}))
                continue
            delta = (" " if _spaced(self.output_sent, text) else "") + text
            self.output_sent += delta
            out.append(self._event("session.output_transcript.delta", delta=delta,
                                   elapsed_ms=_frame_ms(end - self.t0)))
        return out
