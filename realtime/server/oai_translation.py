"""OpenAI's Realtime translation session: `GET /v1/realtime/translations?model=…[&room=NAME]`, the WebSocket the
`openai` SDK's `client.realtime.translations.connect(model=…)` opens with `base_url="http://host:port/v1"`.

The connection is a room's speaker, exactly as a transcription session is (`oai_realtime`: keys, admission, the
decoder pool, server VAD turns), and its output language is watched in the room like a viewer's caption language
(`notes.translate.Translations`: the same LLM path, token pool, storage and replay), so the room's viewers see the
captions and may read them in any language while the SDK client gets the text side of OpenAI's session: the
committed source words and the line-by-line translation, both append-only (`realtime.core.oai_translation`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from realtime.core.oai_realtime import SERVER_ERROR, OaiError
from realtime.core.oai_translation import (
    TAppend,
    TClose,
    TConfig,
    TranslationText,
    TUpdate,
    apply_update,
    parse_event,
    session_object,
)
from realtime.core.protocol import Event, Final, Partial, Translation
from realtime.core.translation import TooManyLanguages
from realtime.server.appkeys import TRANSLATIONS
from realtime.server.oai_realtime import OaiSession

CLOSE_WAIT_S = 120.0  # session.close waits this long at most for the last finals and their translations
LANGUAGE = "session.audio.output.language"


class TranslationSession(OaiSession):
    """The transcription session's pipeline with the translation session's events."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.text = TranslationText(self.items.event_id)
        model = self.request.query.get("model", "").strip()[:100]
        self.text.configure(TConfig(model=model) if model else TConfig())
        self.expires_at = int(time.time() + self.settings.max_lecture_s)
        self._elapsed = 0.0  # session audio time of the latest words decoded

    @staticmethod
    def check(request: web.Request) -> OaiError | None:
        if not request.query.get("model", "").strip():
            return OaiError("missing_required_parameter", "connect with ?model=… (any name: this server's own "
                            "models transcribe and translate)", "model")
        return None

    def created_event(self) -> dict[str, Any]:
        return {"type": "session.created", "event_id": self.items.event_id(),
                "session": session_object(self.text.config, self.session_id, self.expires_at)}

    def parse(self, data: str, max_bytes: int) -> tuple[Any, str | None]:
        return parse_event(data, max_bytes)

    async def dispatch(self, cmd: Any) -> bool:
        if isinstance(cmd, TUpdate):
            self.configure(cmd.session)
        elif isinstance(cmd, TAppend):
            await self.append(cmd.audio)
        elif isinstance(cmd, TClose):
            await self.close()
            return True
        return False

    def configure(self, session: Any) -> None:
        old = self.text.config
        config = apply_update(old, session)
        translations = self.request.app[TRANSLATIONS]
        if config.language != old.language and config.language is not None:
            if not translations.available:
                raise OaiError("translation_unavailable", "this server has no LLM to translate with (set "
                               "--llm-model); the input transcript still comes", LANGUAGE, SERVER_ERROR)
            try:
                translations.watch(self.room, config.language)
            except TooManyLanguages as exc:
                raise OaiError("too_many_languages", str(exc), LANGUAGE) from None
        if config.language != old.language and old.language is not None:
            translations.unwatch(self.room, old.language)
        self.text.configure(config)
        self.out.send({"type": "session.updated", "event_id": self.items.event_id(),
                       "session": session_object(config, self.session_id, self.expires_at)})

    def send(self, events: list[dict[str, Any]]) -> None:
        """The transcription items' events, told as input transcript deltas (or not at all)."""
        for event in self.text.items(events, self._elapsed):
            self.out.send(event)

    def on_event(self, event: Event) -> None:
        if isinstance(event, Translation):
            for out in self.text.translation(event):
                self.out.send(out)
            return
        if self.room.session is not self.speaker and self.speaker.handle is None:
            return
        if isinstance(event, Partial | Final):
            self._elapsed = max(self._elapsed, event.end - self.items.t0)
        if isinstance(event, Final):
            self.text.final(event)
        super().on_event(event)

    async def start(self) -> None:
        await super().start()
        self.text.t0 = self.items.t0

    async def close(self) -> None:
        """`session.close`: the open turn ends, and the session waits for its last finals and their
        translations (at most CLOSE_WAIT_S), then says `session.closed`."""
        await self.commit(quiet=True)
        deadline = time.monotonic() + CLOSE_WAIT_S
        while time.monotonic() < deadline:
            stream = self.stream
            decoding = stream is not None and (stream.pending_finals > 0 or self.segmenter.in_speech)
            if not decoding and self.text.owed == 0:
                break
            self.settle()
            await asyncio.sleep(0.05)
        self.out.send({"type": "session.closed", "event_id": self.items.event_id()})

    def finish(self) -> None:
        super().finish()
        if self.text.config.language is not None:
            self.request.app[TRANSLATIONS].unwatch(self.room, self.text.config.language)
