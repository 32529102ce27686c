"""OpenAI's speech-to-text HTTP API on the offline path: `POST /v1/audio/transcriptions`, `/v1/audio/translations`
and `GET /v1/models`, so an application written for OpenAI works by changing `base_url` (docs/protocol.md, "OpenAI
audio API").

The upload is streamed to a temporary file (a two-hour lecture is never held in memory) and deleted when the answer
is sent; the file is then transcribed by realtime.asr.offline, one chunk at a time at lower priority than every live
speaker. Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, which the SDK turns into its
exception classes. Who may call: on an open server (loopback, no admin key, --open-rooms) anyone on this machine,
as for rooms; otherwise the admin key, as for the rooms API (the SDK sends it as `Authorization: Bearer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from realtime.asr.offline import AudioError, OfflineSegment, probe, transcribe_file
from realtime.core.export import to_srt, to_vtt
from realtime.core.protocol import Final, Word
from realtime.server.appkeys import ENGINE, GATE, OFFLINE, SETTINGS, STARTED
from realtime.server.http_common import admin_refusal, is_local

log = logging.getLogger(__name__)

ALIAS = "whisper-1"
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MAX_FIELD_BYTES = 64 << 10  # a prompt or any other form field
MAX_FIELDS = 32
DRAIN_CAP_BYTES = 64 << 20  # an over-large upload is read (and dropped) this far, so the client sees the 413
READ_CHUNK = 256 << 10


def oai_error(status: int, message: str, code: str | None = None, param: str | None = None,
              kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                             status=status)


class ClientGone(Exception):
    """The client of a plain (not streamed) answer disconnected: raised between chunks to stop the decoding."""


class Refused(Exception):
    def __init__(self, response: web.Response):
        self.response = response


def _as_oai(response: web.Response) -> web.Response:
    """One of the server's own refusals (http_common: `{"type": "error", "code", "message"}`) in OpenAI's shape."""
    try:
        body = json.loads(response.text or "{}")
    except ValueError:
        body = {}
    kind = "authentication_error" if response.status == 401 else (
        "rate_limit_error" if response.status == 429 else "invalid_request_error")
    out = oai_error(response.status, body.get("message", "refused"), body.get("code"), None, kind)
    if "Retry-After" in response.headers:
        out.headers["Retry-After"] = response.headers["Retry-After"]
    return out


def refusal(request: web.Request) -> web.Response | None:
    """None when the caller may transcribe: anyone on an open server (from this machine, not through a proxy),
    else the admin key (401 for a missing or wrong key, wrong keys throttled like the rooms API's)."""
    if request.app[GATE].open_rooms and is_local(request):
        return None
    refused = admin_refusal(request)
    return None if refused is None else _as_oai(refused)


# ------------------------------------------------------------------------------------------------ the upload


@dataclass
class Upload:
    path: str | None = None
    filename: str = ""
    size: int = 0
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[-1].strip() if values else default

    def remove(self) -> None:
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


async def _drain(request: web.Request, budget: int) -> None:
    with contextlib.suppress(Exception):
        while budget > 0 and (chunk := await request.content.read(READ_CHUNK)):
            budget -= len(chunk)


async def read_upload(request: web.Request, limit: int) -> Upload:
    """The multipart form: its fields (small, capped) and its `file` part written to a temporary file as it
    arrives. Refused: not multipart / malformed (400), no file (400), over `limit` bytes (413)."""
    too_large = Refused(oai_error(413, f"the file is larger than this server's limit of {limit / 1e6:g} MB "
                                       "(--max-upload-mb)", "too_large", "file"))
    if request.content_length is not None and request.content_length > limit + MAX_FIELDS * MAX_FIELD_BYTES:
        await _drain(request, DRAIN_CAP_BYTES)
        raise too_large
    if not request.content_type.startswith("multipart/form-data"):
        raise Refused(oai_error(400, "send the audio as multipart/form-data with a `file` part",
                                "invalid_request", None))
    upload = Upload()
    try:
        reader = await request.multipart()
        count = 0
        while (part := await reader.next()) is not None:
            count += 1
            if count > MAX_FIELDS or not isinstance(part, BodyPartReader):
                raise Refused(oai_error(400, "too many or nested form parts", "invalid_request", None))
            if part.name == "file" and upload.path is None:
                upload.filename = part.filename or ""
                suffix = re.sub(r"[^A-Za-z0-9.]", "", os.path.splitext(upload.filename)[1])[:10]
                fd, upload.path = tempfile.mkstemp(prefix="realtime-upload-", suffix=suffix)
                with os.fdopen(fd, "wb") as out:
                    while chunk := await part.read_chunk(READ_CHUNK):
                        upload.size += len(chunk)
                        if upload.size > limit:
                            await _drain(request, DRAIN_CAP_BYTES)
                            raise too_large
                        out.write(chunk)  # page-cache writes of 256 KB: microseconds, not worth a thread
                continue
            data = bytearray()
            while chunk := await part.read_chunk(8192):
                data += chunk
                if len(data) > MAX_FIELD_BYTES:
                    raise Refused(oai_error(400, f"form field {part.name!r} is over {MAX_FIELD_BYTES} bytes",
                                            "invalid_request", part.name))
            try:
                upload.fields.setdefault(part.name or "", []).append(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise Refused(oai_error(400, f"form field {part.name!r} is not UTF-8", "invalid_request",
                                        part.name)) from None
    except Refused:
        upload.remove()
        raise
    except (ValueError, AssertionError, RuntimeError, LookupError) as exc:  # aiohttp's multipart parser
        upload.remove()
        raise Refused(oai_error(400, f"malformed multipart body ({type(exc).__name__})", "invalid_request",
                                None)) from None
    except BaseException:
        upload.remove()
        raise
    if upload.path is None:
        raise Refused(oai_error(400, "the form has no `file` part", "invalid_request", "file"))
    return upload


# ------------------------------------------------------------------------------------------------ options


@dataclass
class Options:
    task: str
    response_format: str
    language: str | None
    prompt: str | None
    temperature: float
    words: bool
    stream: bool


def model_names(request: web.Request) -> list[str]:
    """The names a client may pass as `model`: the alias `whisper-1` and the loaded model's own name."""
    return list(dict.fromkeys([ALIAS, request.app[ENGINE].decoder.name]))


def parse_options(request: web.Request, upload: Upload, task: str) -> Options:
    def bad(message: str, param: str) -> Refused:
        return Refused(oai_error(400, message, "invalid_value", param))

    model = upload.get("model")
    if not model:
        raise bad("`model` is required (this server answers to: " + ", ".join(model_names(request)) + ")", "model")
    if model not in model_names(request):
        raise Refused(oai_error(400, f"model {model!r} is not served here; use one of "
                                     + ", ".join(model_names(request)), "model_not_found", "model"))
    fmt = upload.get("response_format", "json")
    if fmt not in FORMATS:
        raise bad(f"response_format must be one of {', '.join(FORMATS)}", "response_format")
    try:
        temperature = float(upload.get("temperature", "0") or 0)
    except ValueError:
        raise bad("temperature must be a number", "temperature") from None
    if not 0.0 <= temperature <= 1.0:
        raise bad("temperature must be within 0 and 1", "temperature")
    language = upload.get("language").lower() or None if task == "transcribe" else None
    if language is not None:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if language not in _LANGUAGE_CODES:
            raise bad(f"unknown language {language!r}: give an ISO-639-1 code such as en, de, fr", "language")
    granularities = set(upload.fields.get("timestamp_granularities[]", []) + upload.fields.get(
        "timestamp_granularities", []))
    if granularities - {"word", "segment"}:
        raise bad("timestamp_granularities[] takes word and/or segment", "timestamp_granularities")
    stream = upload.get("stream", "false").lower() in ("true", "1")
    return Options(task, fmt, language, upload.get("prompt") or None, temperature,
                   "word" in granularities and fmt == "verbose_json" or fmt in ("srt", "vtt"), stream)


# ------------------------------------------------------------------------------------------------ answers


def _text(segments: list[OfflineSegment]) -> str:
    return " ".join(s.text for s in segments)


def _finals(segments: list[OfflineSegment], language: str) -> list[Final]:
    return [Final(s.id, 0, s.start, s.end, s.text, language,
                  [Word(w.word.strip(), w.start, w.end, w.probability) for w in s.words]) for s in segments]


def render(opts: Options, segments: list[OfflineSegment], language: str, duration: float,
           granularities_words: bool) -> web.Response:
    text = _text(segments)
    if opts.response_format == "text":
        return web.Response(text=text + "\n" if text else "", content_type="text/plain")
    if opts.response_format == "srt":
        return web.Response(text=to_srt(_finals(segments, language)), content_type="application/x-subrip")
    if opts.response_format == "vtt":
        return web.Response(text=to_vtt(_finals(segments, language)), content_type="text/vtt")
    usage = {"type": "duration", "seconds": round(duration, 3)}
    if opts.response_format == "json":
        return web.json_response({"text": text, "usage": usage} if opts.task == "transcribe" else {"text": text})
    body: dict[str, Any] = {"task": opts.task, "language": language if opts.task == "transcribe" else "english",
                            "duration": round(duration, 3), "text": text,
                            "segments": [{"id": s.id, "seek": int(s.start * 100), "start": s.start, "end": s.end,
                                          "text": s.text, "tokens": [], "temperature": s.temperature,
                                          "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
                                          "no_speech_prob": s.no_speech_prob} for s in segments]}
    if granularities_words:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for s in segments for w in s.words]
    if opts.task == "transcribe":
        body["usage"] = usage
    return web.json_response(body)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _answer(request: web.Request, task: str) -> web.StreamResponse:
    transcriber = request.app.get(OFFLINE)
    if transcriber is None:
        return oai_error(503, "this server has no offline transcriber", "unavailable", None, "server_error")
    settings = request.app[SETTINGS]
    upload = await read_upload(request, int(settings.max_upload_mb * 1e6))
    try:
        opts = parse_options(request, upload, task)
        duration = await asyncio.to_thread(probe, upload.path)  # before any answer: 415/400/413 as statuses
        if duration > settings.max_lecture_s:
            raise AudioError("too_long", f"the audio is {duration:.0f} s long, over this server's limit of "
                                         f"{settings.max_lecture_s:.0f} s (--max-lecture-s)")
        def check_client(_done: float, _total: float) -> None:
            if _gone(request):
                raise ClientGone

        words_wanted = "word" in (upload.fields.get("timestamp_granularities[]", [])
                                  + upload.fields.get("timestamp_granularities", []))
        job = transcribe_file(request.app[ENGINE], transcriber, upload.path, language=opts.language, task=task,
                              prompt=opts.prompt, temperature=opts.temperature, word_timestamps=opts.words,
                              max_s=settings.max_lecture_s, on_progress=None if opts.stream else check_client)
        if opts.stream:
            return await _stream(request, job)
        segments: list[OfflineSegment] = []
        try:
            async for seg in job:
                segments.append(seg)
        except ClientGone:
            log.debug("a transcription's client went away: stopped after %.0f s", job.done_s)
            return web.Response(status=499)  # nobody reads it
        finally:
            await job.aclose()
        return render(opts, segments, job.language or opts.language or "en", job.duration or duration,
                      words_wanted and opts.response_format == "verbose_json")
    except AudioError as exc:
        return oai_error(exc.status, str(exc), exc.code, "file")
    finally:
        upload.remove()


async def _stream(request: web.Request, job) -> web.StreamResponse:
    """SSE: a `transcript.text.delta` per segment (the first without a leading space, so the deltas joined are the
    text), then `transcript.text.done`; an error after the answer started is an `error` event."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    parts: list[str] = []
    try:
        async for seg in job:
            delta = (" " if parts else "") + seg.text
            parts.append(delta)
            await response.write(_sse({"type": "transcript.text.delta", "delta": delta}))
        await response.write(_sse({"type": "transcript.text.done", "text": "".join(parts)}))
    except AudioError as exc:
        await response.write(_sse({"type": "error", "error": {"message": str(exc), "type": "invalid_request_error",
                                                              "param": "file", "code": exc.code}}))
    except (ConnectionResetError, ConnectionError):
        log.debug("a streamed transcription's client went away")
    finally:
        await job.aclose()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _task(request: web.Request, task: str) -> web.StreamResponse:
    if (refused := refusal(request)) is not None:
        return refused
    try:
        return await _answer(request, task)
    except Refused as exc:
        return exc.response


async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await _task(request, "transcribe")


async def translations(request: web.Request) -> web.StreamResponse:
    return await _task(request, "translate")


def _model(request: web.Request, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(request.app[STARTED]), "owned_by": "realtime"}


async def models(request: web.Request) -> web.Response:
    """The loaded model under each name `model` accepts: `whisper-1` (an alias) and its own name."""
    if (refused := refusal(request)) is not None:
        return refused
    return web.json_response({"object": "list", "data": [_model(request, n) for n in model_names(request)]})


async def model(request: web.Request) -> web.Response:
    if (refused := refusal(request)) is not None:
        return refused
    name = request.match_info["model"]
    if name not in model_names(request):
        return oai_error(404, f"the model {name!r} does not exist here", "model_not_found", "model")
    return web.json_response(_model(request, name))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/translations", translations)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model:.+}", model)
