"""Recorded lectures into rooms: `POST /v1/rooms/{room}/upload` (the file as the raw request body), `GET` (the
upload's state) and `DELETE` (cancel it).

An uploaded recording becomes the room's lecture as a live one would: its finals (on the file's clock, after the
room's lecture so far), the notes (they learn of finals through `Room.on_publish`, as for a live stream), the
end-of-lecture notes flush and summary (`NotesService.flush`, as at a speaker's `stop`), and so the exports.
Viewers see the finals arrive, and `status` events carry the upload's progress (`upload`, docs/protocol.md
"Recorded lectures").

Why the shape it has:
- The body is streamed to a temporary file (never held in memory), then checked whole — probed and decoded once
  without the model — before anything is published, so that a file that is not audio (415), too long or too large
  (413) or truncated or corrupt (400) is refused with nothing written into the room.
- The answer is NDJSON streamed as the transcription goes (`accepted`, `progress` lines, then one `done`,
  `cancelled` or `error` line), so a client can show a progress bar without polling; a client that goes away
  cancels the upload (the progress lines are also how the server notices).
- Decoding goes through `offline.transcribe_file`: below every live decode, one chunk at a time (on CPU in a
  nice-19 lane of its own, `realtime.asr.lane`; elsewhere `Engine.run_background`), so an hour-long upload does
  not delay another room's captions.
- While it runs the upload is the room's session (`Room.session`): a live speaker is refused (`speaker_exists`,
  4409, also with `takeover`), the room cannot be deleted over HTTP (409), and a shutdown stops it like a speaker.
  A cancel (DELETE, a client gone, the room deleted, shutdown) stops decoding; finals already published stay (they
  are committed transcript) and the last `status` says where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from realtime.asr.offline import AudioError
from realtime.core.access import bearer, proxied
from realtime.core.protocol import (
    BAD_MESSAGE,
    BAD_ROOM,
    BUSY,
    KEY_REQUIRED,
    LANGUAGES,
    MAX_PROMPT_CHARS,
    SPEAKER_EXISTS,
    TASKS,
    TOO_MANY_ROOMS,
    ProtocolError,
    check_room,
)
from realtime.core.room import Room
from realtime.server.appkeys import GATE, HOSTS, NOTES, ORIGINS, ROOMS, SETTINGS, STORE
from realtime.server.http_common import error, key_blocked, wrong_key
from realtime.server.upload_job import UploadJob, check_file, offline

log = logging.getLogger(__name__)

UPLOADS = web.AppKey("uploads", dict)  # room name -> its latest UploadJob (running or finished), this process
NDJSON = "application/x-ndjson"
READ_CHUNK = 1 << 16
WRITE_BATCH = 1 << 20  # body bytes gathered before one write to the temporary file (off the loop)
# Content types a cross-site form may send without a CORS preflight, and ones that are certainly not audio.
REFUSED_TYPES = ("text/", "multipart/", "application/x-www-form-urlencoded", "application/json")


# ---------------------------------------------------------------- the checks before a body is read


def _limits(request: web.Request) -> tuple[int, float]:
    settings = request.app[SETTINGS]
    return int(settings.max_upload_mb * 1e6), float(settings.max_lecture_s)  # MB as oai_audio counts them


def _options(request: web.Request) -> dict[str, Any] | web.Response:
    """`?language=&task=&prompt=`, as in a speaker's `start`."""
    q = request.query
    language = q.get("language") or None
    task = q.get("task") or "transcribe"
    prompt = q.get("prompt", "")
    if language is not None and language not in LANGUAGES:
        return error(400, BAD_MESSAGE, f"language {language!r} is not one Whisper knows (use a code such as en)")
    if task not in TASKS:
        return error(400, BAD_MESSAGE, f"task must be one of {', '.join(TASKS)}")
    if len(prompt) > MAX_PROMPT_CHARS:
        return error(400, BAD_MESSAGE, f"prompt must be at most {MAX_PROMPT_CHARS} characters")
    return {"language": language, "task": task, "prompt": prompt or None}


def _room_for(request: web.Request, create: bool) -> Room | web.Response:
    """The room named in the URL, made on first use only where open rooms are (a loopback quick start)."""
    settings = request.app[SETTINGS]
    try:
        name = check_room(request.match_info["room"], settings.max_room_name)
    except ProtocolError as exc:
        return error(400, BAD_ROOM, exc.message)
    rooms = request.app[ROOMS]
    room = rooms.find(name)
    if room is None or room.deleted:
        if not (create and request.app[GATE].open_rooms and not proxied(request.headers)):
            return error(404, "no_such_room", f"there is no room {name!r}; rooms are made with `realtime room "
                                              "create` or the admin API")
        if len(request.app[STORE].list_rooms()) >= settings.max_rooms:
            return error(429, TOO_MANY_ROOMS, f"this server holds {settings.max_rooms} rooms, its limit")
        room = rooms.get(name)
    return room


def _refusal(request: web.Request, room: Room) -> web.Response | None:
    """401 for a key that may not publish here (the speaker key or the admin key; none in an open room)."""
    key = bearer(request.headers.get("Authorization"))
    refusal = request.app[GATE].publish_refusal(room.record.speaker_key_hash, key, not proxied(request.headers))
    if refusal is None:
        return None
    if refusal == KEY_REQUIRED:
        return error(401, refusal, "send the room's speaker key (or the admin key) as Authorization: Bearer <key>")
    return wrong_key(request) or error(401, refusal, "that is not this room's speaker key")


def _busy(room: Room) -> web.Response | None:
    current = room.session
    if current is None:
        return None
    if getattr(current, "upload", False):
        return error(409, SPEAKER_EXISTS, "this room is already transcribing an uploaded recording "
                                          "(DELETE /v1/rooms/{room}/upload cancels it)")
    return error(409, SPEAKER_EXISTS, "this room is live (a speaker is connected); upload when the lecture is over")


def _existing(request: web.Request) -> Room | web.Response:
    """An existing room whose speaker or admin key came with the request, or the refusal."""
    room = _room_for(request, create=False)
    if isinstance(room, web.Response):
        return room
    return _refusal(request, room) or room


def _body_refusal(request: web.Request) -> web.Response | None:
    content_type = request.headers.get("Content-Type", "").lower()
    if any(content_type.startswith(t) for t in REFUSED_TYPES):
        return error(415, "not_audio", "send the recording itself as the body (Content-Type: audio/..., video/... "
                                       "or application/octet-stream), not a form or text")
    max_bytes, _ = _limits(request)
    if request.content_length is not None and request.content_length > max_bytes:
        return error(413, "too_large", f"the file is {request.content_length / 1e6:.1f} MB, over the limit of "
                                       f"{max_bytes / 1e6:g} MB (--max-upload-mb)")
    return None


def precheck(request: web.Request, create: bool = True) -> Room | web.Response:
    """Everything that can be refused before the body is read: room, key, a running lecture, type and size."""
    room = _room_for(request, create)
    if isinstance(room, web.Response):
        return room
    return _refusal(request, room) or _busy(room) or _body_refusal(request) or room


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` (the CLI sends it): refuse before the client sends a byte of a large body. This runs
    before the middlewares, so only requests they would let through (Host, Origin, key throttle) are judged here;
    the others get 100 and then the middlewares' own answer."""
    origin = request.headers.get("Origin")
    passes = request.app[HOSTS].allows(request.headers.get("Host")) and \
        (origin is None or request.app[ORIGINS].allows(origin, request.host)) and key_blocked(request) is None
    if passes:
        checked = precheck(request, create=False) if request.app[ROOMS].find(request.match_info["room"]) \
            else None
        if isinstance(checked, web.Response):
            return checked
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None
    raise web.HTTPExpectationFailed(text="Unknown Expect: " + request.headers.get("Expect", ""))


# ---------------------------------------------------------------- the endpoints


async def receive(request: web.Request, job: UploadJob, max_bytes: int) -> Path:
    """Stream the body into a temporary file. AudioError too_large (413) as soon as it passes the limit, corrupt
    (400) for an empty body."""
    fd, name = tempfile.mkstemp(prefix="realtime-upload-", suffix=".bin")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            batch = bytearray()
            async for chunk in request.content.iter_chunked(READ_CHUNK):
                job.received_bytes += len(chunk)
                if job.received_bytes > max_bytes:
                    raise AudioError("too_large", f"the file is over the limit of {max_bytes / 1e6:g} MB "
                                                  "(--max-upload-mb)")
                batch += chunk
                if len(batch) >= WRITE_BATCH:
                    await asyncio.to_thread(f.write, bytes(batch))
                    batch.clear()
            await asyncio.to_thread(f.write, bytes(batch))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if job.received_bytes == 0:
        path.unlink(missing_ok=True)
        raise AudioError("corrupt", "the body is empty: send the recording as the request body")
    return path


def line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


async def post_upload(request: web.Request) -> web.StreamResponse:
    if offline(request.app) is None:
        return error(503, "unavailable", "this server has no offline transcriber")
    checked = precheck(request)
    if isinstance(checked, web.Response):
        return checked
    room = checked
    options = _options(request)
    if isinstance(options, web.Response):
        return options
    job = UploadJob(request.app, room)
    room.session = job  # claimed before the body is read: a second upload or a speaker now gets 409 / 4409
    request.app[UPLOADS][room.name] = job
    max_bytes, max_s = _limits(request)
    try:
        path = await receive(request, job, max_bytes)
    except AudioError as exc:
        job.release("refused", exc.code, str(exc))
        return error(exc.status, exc.code, str(exc))
    except BaseException:  # the client went away mid-body (or the server stops)
        job.release("refused", "incomplete", "the upload was interrupted before the whole file arrived")
        raise
    job.state = "checking"
    job.changed.set()
    try:
        left_s = max_s - room.audio_s
        job.total_s = await asyncio.to_thread(check_file, path, left_s)
    except AudioError as exc:
        path.unlink(missing_ok=True)
        message = str(exc) if room.audio_s <= 0 or exc.code != "too_long" else \
            f"{exc} (the room's lecture already has {room.audio_s:.0f} s of --max-lecture-s {max_s:.0f} s)"
        job.release("refused", exc.code, message)
        return error(exc.status, exc.code, message)
    except BaseException:
        path.unlink(missing_ok=True)
        job.release("refused", "incomplete", "the upload was interrupted while the file was checked")
        raise
    if room.deleted:
        path.unlink(missing_ok=True)
        job.release("refused", "no_such_room", "the room was deleted")
        return error(404, "no_such_room", "the room was deleted")
    request.app[NOTES].of(room)  # the notes follow the finals from the first one
    job.begin(path, options)
    return await progress_response(request, job)


async def progress_response(request: web.Request, job: UploadJob) -> web.StreamResponse:
    """Stream `progress` lines until the job ends; a client that goes away cancels it."""
    response = web.StreamResponse(status=200, headers={"Content-Type": NDJSON, "Cache-Control": "no-store",
                                                        "X-Content-Type-Options": "nosniff"})
    interval = request.app[SETTINGS].status_interval_s
    try:
        await response.prepare(request)
        await response.write(line({"type": "accepted", "room": job.room.name, **job.info()}))
        while job.running:
            job.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.changed.wait(), interval)
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client went away")
            if job.running:
                await response.write(line({"type": "progress", **job.info()}))
        end = {"done": "done", "cancelled": "cancelled"}.get(job.state, "error")
        await response.write(line({"type": end, **job.info()}))
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        job.cancel("client disconnected")
        raise
    return response


async def get_upload(request: web.Request) -> web.Response:
    """The room's latest upload (this process's memory) and the limits, for the speaker or the admin."""
    room = _existing(request)
    if isinstance(room, web.Response):
        return room
    max_bytes, max_s = _limits(request)
    job = request.app[UPLOADS].get(room.name)
    return web.json_response({"room": room.name, "upload": job.info() if job else None,
                              "live": room.session is not None and not getattr(room.session, "upload", False),
                              "limits": {"max_bytes": max_bytes, "max_s": max_s,
                                         "room_audio_s": round(room.audio_s, 2)}})


async def delete_upload(request: web.Request) -> web.Response:
    """Cancel the room's running upload; what it published stays. 404 when none runs."""
    room = _existing(request)
    if isinstance(room, web.Response):
        return room
    job = request.app[UPLOADS].get(room.name)
    if job is None or not job.running:
        return error(404, "no_upload", "this room has no upload running")
    if job._main is None:  # still receiving or checking: only its own request can end it now
        return error(409, BUSY, "the upload has not started transcribing yet; cancel it by closing its request")
    job.cancel("cancelled")
    await asyncio.shield(job._main)
    return web.json_response({"room": room.name, "upload": job.info()})


def add_routes(app: web.Application) -> None:
    app[UPLOADS] = {}
    app.router.add_post("/v1/rooms/{room}/upload", post_upload, expect_handler=expect_continue)
    app.router.add_get("/v1/rooms/{room}/upload", get_upload)
    app.router.add_delete("/v1/rooms/{room}/upload", delete_upload)
