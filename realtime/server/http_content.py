"""A room's content over HTTP: transcript, exports, summary, questions and catch-up recaps.

What costs CPU (retrieval, summaries, export layout) runs on the offload thread, never on the event loop, and
downloads are cached per state of the room (`exports.py`). What costs LLM tokens is limited three ways: questions
and new summaries per client address (`--ask-per-minute`), the room's `visitors` budget and the server's daily cap
(`notes.budget`), and who may ask at all (the room's `ask` setting). A new summary needs the speaker or admin key.
A private room answers a request without its key exactly as a missing room does (404), so its name is no secret.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from realtime.core import export
from realtime.core.access import bearer, key_matches
from realtime.core.protocol import (
    BAD_KEY,
    BAD_MESSAGE,
    BUSY,
    KEY_REQUIRED,
    NO_SUCH_ROOM,
    NO_SUMMARY,
    NOT_ALLOWED,
    RATE_LIMITED,
    TRANSLATION_UNAVAILABLE,
)
from realtime.core.room import Room
from realtime.core.translation import InvalidTranslation, parse_language
from realtime.notes.llm import LLMError
from realtime.notes.service import NoBudget, RoomDeleted
from realtime.server.appkeys import EXPORTS, GATE, LIMITS, NOTES, OFFLOAD, ROOMS, TRANSLATIONS
from realtime.server.exports import download
from realtime.server.http_common import (
    allow_origin,
    client_of,
    error,
    is_local,
    read_json,
    retry_after,
    wrong_key,
)
from realtime.server.offload import Busy

MAX_QUESTION_CHARS = 500


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/rooms/{room}/transcript", transcript)
    app.router.add_get("/v1/rooms/{room}/export", export_room)
    app.router.add_get("/v1/rooms/{room}/summary", get_summary)
    app.router.add_post("/v1/rooms/{room}/summary", post_summary)
    app.router.add_post("/v1/rooms/{room}/ask", ask)
    app.router.add_post("/v1/rooms/{room}/catchup", catchup)


def no_such_room(_: Room | None) -> web.Response:
    return error(404, NO_SUCH_ROOM, "no such room (a private room needs its key: Authorization: Bearer <key>)")


def viewable(request: web.Request) -> Room | web.Response:
    """The room, if this request may see it; a 404 otherwise (missing, deleted, or private and no key opens it)."""
    room = request.app[ROOMS].find(request.match_info["room"])
    key = bearer(request.headers.get("Authorization"))
    if room is None or room.deleted or not request.app[GATE].may_view(room.record.viewer_key_hash,
                                                                      room.record.speaker_key_hash, key):
        return (wrong_key(request) if key and room is not None and not room.deleted else None) or no_such_room(room)
    room.used_at = time.monotonic()
    return room


def holds_key(request: web.Request, room: Room) -> bool:
    """The request presents one of the room's keys or the admin key."""
    key = bearer(request.headers.get("Authorization"))
    rec = room.record
    return key_matches(key, rec.viewer_key_hash) or key_matches(key, rec.speaker_key_hash) or \
        request.app[GATE].is_admin(key)


def limited(request: web.Request) -> web.Response | None:
    """A question or summary request beyond its client's rate (the admin is not limited): 429 with Retry-After."""
    if request.app[GATE].is_admin(bearer(request.headers.get("Authorization"))):
        return None
    wait = request.app[LIMITS].asks.take(client_of(request), time.monotonic())
    if wait > 0:
        return retry_after(429, RATE_LIMITED, "too many questions or summaries from your address; wait", wait)
    return None


async def transcript(request: web.Request) -> web.Response:
    room = viewable(request)
    if isinstance(room, web.Response):
        return room
    return await _download(request, room, "transcript", "application/json", None)


async def export_room(request: web.Request) -> web.Response:
    """`?format=txt|srt|vtt|json|md`: the transcript as text or subtitles, everything as JSON, notes and summary
    as Markdown; served as a download named after the room. `&lang=zh`: the transcript in that caption language
    (each line translated where a translation was made)."""
    room = viewable(request)
    if isinstance(room, web.Response):
        return room
    fmt = request.query.get("format", "txt")
    if fmt not in export.FORMATS:
        return error(400, BAD_MESSAGE, f"format must be one of {', '.join(export.FORMATS)}")
    try:
        lang = parse_language(request.query.get("lang"))
    except ValueError as exc:
        return error(400, BAD_MESSAGE, f"lang: {exc}")
    media, ext = export.FORMATS[fmt]
    name = f"{room.name}.{lang}" if lang else room.name
    return await _download(request, room, fmt, media, f'attachment; filename="{name}.{ext}"', lang)


async def _download(request: web.Request, room: Room, fmt: str, media: str, disposition: str | None,
                    lang: str | None = None) -> web.Response:
    try:
        text = await download(room, request.app[NOTES].of(room), fmt, request.app[EXPORTS], request.app[OFFLOAD],
                              lang)
    except Busy:
        return busy()
    headers = {"Content-Type": f"{media}; charset=utf-8"}
    if disposition:
        headers["Content-Disposition"] = disposition
    return web.Response(text=text, headers=headers)


def busy() -> web.Response:
    return retry_after(503, BUSY, "the server is busy with other requests; try again shortly", 2)


async def get_summary(request: web.Request) -> web.Response:
    """The latest summary: made when the lecture stops, or by a POST with the speaker key; `?lang=zh` in a caption
    language."""
    room = viewable(request)
    if isinstance(room, web.Response):
        return room
    summary = request.app[NOTES].of(room).summary
    if not summary:
        return error(404, NO_SUMMARY, "there is no summary yet: one is made when the lecture stops")
    try:
        lang = parse_language(request.query.get("lang"))
    except ValueError as exc:
        return error(400, BAD_MESSAGE, f"lang: {exc}")
    if lang is not None:  # `?lang=zh`: translated once by the LLM, then served to everyone who asks
        translations = request.app[TRANSLATIONS]
        if not translations.available:
            return error(503, TRANSLATION_UNAVAILABLE, "this server has no LLM to translate with")
        try:
            summary = await translations.summary(room, summary, lang)
        except (LLMError, NoBudget, InvalidTranslation) as exc:
            return error(503, TRANSLATION_UNAVAILABLE, f"the summary could not be translated: {exc}")
    return web.Response(text=summary, content_type="text/markdown", charset="utf-8")


async def post_summary(request: web.Request) -> web.Response:
    """A summary of the lecture so far, for the room's speaker or the admin; made again only if the transcript grew
    since the last one (and announced as a `summary` event)."""
    room = viewable(request)
    if isinstance(room, web.Response):
        return room
    key = bearer(request.headers.get("Authorization"))
    gate = request.app[GATE]
    if gate.publish_refusal(room.record.speaker_key_hash, key, is_local(request)) is not None:
        if key:
            refusal = wrong_key(request)
            if refusal is not None:
                return refusal
        return error(401, BAD_KEY if key else KEY_REQUIRED, "a summary is made by the room's speaker: send the "
                                                            "speaker key as Authorization: Bearer <key>")
    refusal = limited(request)
    if refusal is not None:
        return refusal
    notes = request.app[NOTES]
    try:
        markdown = await notes.for_room(room, notes.summarize(room))
    except Busy:
        return busy()
    except RoomDeleted:
        return no_such_room(None)
    return web.Response(text=markdown, content_type="text/markdown", charset="utf-8")


async def ask(request: web.Request) -> web.Response:
    """An answer from the transcript only (see NotesService.ask), for whoever the room's `ask` setting admits."""
    room = viewable(request)
    if isinstance(room, web.Response):
        return room
    policy = room.record.ask
    if policy == "nobody" or policy == "viewers" and not holds_key(request, room):
        if policy == "viewers" and bearer(request.headers.get("Authorization")):
            refusal = wrong_key(request)
            if refusal is not None:
                return refusal
        return error(403, NOT_ALLOWED, "this room takes no questions" if policy == "nobody"
                     else "in this room only viewers with its key may ask: Authorization: Bearer <key>")
    question = (await read_json(request)).get("question")
    if not isinstance(question, str) or not 0 < len(question.strip()) <= MAX_QUESTION_CHARS:
        return error(400, BAD_MESSAGE, f'send {{"question": "..."}} with 1-{MAX_QUESTION_CHARS} characters')
    refusal = limited(request)
    if refusal is not None:
        return refusal
    notes = request.app[NOTES]
    try:
        answer = await notes.for_room(room, notes.ask(room, question.strip()))
    except Busy:
        return busy()
    except RoomDeleted:
        return no_such_room(None)
    return web.json_response(answer)


async def catchup(request: web.Request) -> web.StreamResponse:
    """A recap of the lecture so far for whoever may view the room (`catchup_live`): JSON, or streamed as
    server-sent events (`meta`, then `delta` pieces as the LLM writes them, then `done` with the whole recap) when
    the request accepts text/event-stream. A recap being written or just written is shared, and costs nothing; a
    new one counts against the client's question rate."""
    room = viewable(request)
    if isinstance(room, web.Response):
        return room
    catchups = request.app[NOTES].catchups
    if not catchups.fresh(room):
        refusal = limited(request)
        if refusal is not None:
            return refusal
    recap, cached = catchups.get(room)
    meta = {"cached": cached, "finals": recap.finals, "started_at": recap.started_at,
            "covered": {"from": recap.covered[0], "to": recap.covered[1]}}
    if "text/event-stream" not in request.headers.get("Accept", ""):
        async for _ in recap.follow():
            pass
        return web.json_response({**meta, "source": recap.source, "markdown": recap.markdown})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    allow_origin(request, response)  # a widget on another allowed site reads the stream (set before it starts)
    await response.prepare(request)
    await response.write(sse("meta", meta))
    async for piece in recap.follow():
        await response.write(sse("delta", {"text": piece}))
    await response.write(sse("done", {"source": recap.source, "markdown": recap.markdown}))
    await response.write_eof()
    return response


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
