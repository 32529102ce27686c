"""The listener endpoint (`/ws/listen/{room}`): the room's history or what a resuming listener missed, then its
live events; a listener may only ping."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from realtime import PROTOCOL_VERSION
from realtime.core.protocol import (
    BAD_MESSAGE,
    CLOSE_BAD_ROOM,
    CLOSE_NORMAL,
    NOT_A_SPEAKER,
    TOO_MANY_LANGUAGES,
    TRANSLATION_UNAVAILABLE,
    Auth,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    parse_text,
)
from realtime.core.ratelimit import MESSAGE_BURST, MESSAGE_RATE, TokenBucket
from realtime.core.room import Room
from realtime.core.translation import TooManyLanguages, parse_language
from realtime.server.appkeys import ENGINE, SETTINGS, STATS, TRANSLATIONS
from realtime.server.rooms import Connection
from realtime.server.ws import (
    check_view,
    finish,
    model_name,
    refuse,
    sender,
    serve_socket,
    since_of,
    throttle,
)

log = logging.getLogger(__name__)


async def listener_ws(request: web.Request) -> web.WebSocketResponse:
    return await serve_socket(request, "listener", listen)


async def listen(request: web.Request, ws: web.WebSocketResponse, room: Room, conn: Connection) -> None:
    try:
        since = since_of(request)
        lang = parse_language(request.query.get("translate"))
    except ProtocolError as exc:
        await refuse(ws, request.app[STATS], exc.code, exc.message, CLOSE_BAD_ROOM)
        return
    except ValueError as exc:
        await refuse(ws, request.app[STATS], BAD_MESSAGE, f"translate: {exc}", CLOSE_BAD_ROOM)
        return
    if await check_view(request, ws, room) is False:
        return
    settings = request.app[SETTINGS]
    task = asyncio.get_running_loop().create_task(sender(ws, conn))
    hello = Hello(room.name, "listener", PROTOCOL_VERSION, model_name(request.app[ENGINE]), len(room.finals))
    translations, refusal = request.app[TRANSLATIONS], None
    if lang is not None and not translations.available:
        refusal = (TRANSLATION_UNAVAILABLE, "this server has no LLM to translate with: captions come in the "
                                            "lecture's language")
    elif lang is not None:
        try:
            translations.watch(room, lang)
            conn.translate = lang
        except TooManyLanguages as exc:
            refusal = (TOO_MANY_LANGUAGES, f"{exc}: captions come in the lecture's language")
    room.join(conn, hello, since)
    if refusal is not None:
        room.error(conn, *refusal)
    messages = TokenBucket(MESSAGE_RATE, MESSAGE_BURST, time.monotonic())
    try:
        async for msg in ws:
            await throttle(messages)
            if msg.type == WSMsgType.BINARY:
                room.error(conn, NOT_A_SPEAKER, "listeners cannot send audio; connect to /ws/speak/{room}")
            elif msg.type == WSMsgType.TEXT:
                try:
                    cmd = parse_text(msg.data, settings.max_message_bytes)
                except ProtocolError as exc:
                    room.error(conn, exc.code, exc.message)
                    continue
                if isinstance(cmd, Ping):
                    room.direct(conn, Pong(cmd.id))
                elif not isinstance(cmd, Auth):  # a key sent to a public room changes nothing
                    room.error(conn, NOT_A_SPEAKER, "only the speaker can start or stop the lecture")
            if conn.close_code is not None:
                break
    finally:
        if conn.translate is not None:
            translations.unwatch(room, conn.translate)
        room.leave(conn)
        await finish(ws, conn, task, conn.close_code or CLOSE_NORMAL)
