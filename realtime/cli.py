"""`realtime serve | stream | listen | room | export | certs | llm | upload`: the console entry point."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from realtime import __version__
from realtime.config import Settings

DEFAULT_SERVER = "ws://127.0.0.1:8000"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime", description="Live lecture captions with streaming Whisper.")
    parser.add_argument("--version", action="version", version=f"realtime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the captioning server",
                           description="Flags override REALTIME_* environment variables, which override defaults.")
    Settings.add_arguments(serve)

    stream = sub.add_parser("stream", help="play an audio file into a room as a microphone and print captions")
    stream.add_argument("file", help="any audio file FFmpeg reads (resampled to 16 kHz mono)")
    stream.add_argument("--room", default="demo")
    stream.add_argument("--server", default=DEFAULT_SERVER, help="server address (ws://, wss://, http://)")
    stream.add_argument("--speed", type=float, default=1.0, help="1.0 = real time, 0 = as fast as possible")
    stream.add_argument("--chunk-ms", type=int, default=100, help="audio packet length")
    stream.add_argument("--language", default=None, help="spoken language code, default: detect")
    stream.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    stream.add_argument("--prompt", default="", help="course terms and context for the decoder")
    stream.add_argument("--jsonl", action="store_true", help="print every event as a JSON line with receive time t")
    stream.add_argument("--key", default=None, help="the room's speaker key (or REALTIME_KEY)")
    stream.add_argument("--takeover", action="store_true", help="replace the room's current speaker")

    listen = sub.add_parser("listen", help="join a room as a listener and print captions")
    listen.add_argument("room")
    listen.add_argument("--server", default=DEFAULT_SERVER)
    listen.add_argument("--jsonl", action="store_true", help="print every event as a JSON line")
    listen.add_argument("--idle", type=float, default=None, help="exit after this many seconds without events")
    listen.add_argument("--since", type=int, default=None, help="resume after this seq (the last one you saw)")
    listen.add_argument("--key", default=None, help="a private room's viewer key (or REALTIME_KEY)")
    listen.add_argument("--translate", default=None, metavar="LANG",
                        help="also print each line translated into this language (e.g. zh, de; needs an LLM)")

    room = sub.add_parser("room", help="create, list or delete rooms (in the server's database)")
    room_sub = room.add_subparsers(dest="action", required=True)
    create = room_sub.add_parser("create", help="make a room; prints its keys (shown once) and links")
    create.add_argument("title", help='e.g. "Physics 101"')
    create.add_argument("--name", default=None, help="room name in URLs (default: from the title)")
    create.add_argument("--private", action="store_true", help="viewers need a viewer key too")
    create.add_argument("--ask", choices=("anyone", "viewers", "nobody"), default="anyone",
                        help="who may ask questions about the lecture (viewers: holders of a room key)")
    listing = room_sub.add_parser("list", help="the rooms and their state")
    delete = room_sub.add_parser("delete", help="delete a room and its transcript")
    delete.add_argument("name")
    for p in (create, listing, delete):
        p.add_argument("--db", default=None, help="database path (default: REALTIME_DB or the serve default)")
    create.add_argument("--public-url", default=None, help="base URL for the links (default: REALTIME_PUBLIC_URL "
                                                           "or http://HOST:PORT of the serve settings)")
    create.add_argument("--json", action="store_true", help="print the result as JSON")

    certs = sub.add_parser("certs", help="make a self-signed certificate and key to serve HTTPS/WSS on a LAN")
    certs.add_argument("--out", default=None, help="directory for cert.pem and key.pem "
                                                   "(default: ~/.local/state/realtime/tls)")
    certs.add_argument("--host", action="extend", nargs="+", default=[], metavar="NAME_OR_IP",
                       help="names and addresses to cover besides localhost, 127.0.0.1 and this machine's IPv4s")
    certs.add_argument("--days", type=int, default=365, help="validity in days")

    llm = sub.add_parser("llm", help="run the bundled local LLM (the llm extra) in the foreground and print its URL",
                         description="llama.cpp's OpenAI-compatible server on loopback, for `realtime serve "
                                     "--llm-model local --llm-base-url URL` and other tools to share. Ctrl-C stops it.")
    llm.add_argument("--model", dest="llm_model", choices=("local", "local-0.5b"), default=None,
                     help="local = Qwen2.5-Coder-1.5B-Instruct, local-0.5b = the 0.5B (default: REALTIME_LLM_MODEL "
                          "if it names one, else local)")
    llm.add_argument("--port", dest="llm_port", type=int, default=0, help="loopback port (default: a free one)")
    for name in ("llm_threads", "llm_context", "cache_dir"):
        f = next(f for f in Settings.fields() if f.name == name)
        llm.add_argument("--" + name.replace("_", "-"), dest=name, type=int if f.type == "int" else str, default=None,
                         metavar=name.upper(), help=f.metadata["help"])

    notes = sub.add_parser("notes", help="notes and summary of a transcript made elsewhere (no server needed)",
                           description="TRANSCRIPT: text with one utterance per line, or a JSON, SRT or VTT export. "
                                       "Extractive unless --llm-model is given (local, local-0.5b, or an endpoint's).")
    notes.add_argument("transcript")
    notes.add_argument("--format", choices=("md", "json"), default="md")
    notes.add_argument("--input-format", choices=("txt", "json", "srt", "vtt"), default=None,
                       help="default: from the file name, else the content")
    notes.add_argument("--glossary", default="", help="course terms, as a room's prompt")
    notes.add_argument("-o", "--output", default=None, help="write to this file instead of standard output")
    for name in ("llm_model", "llm_base_url", "llm_api_key", "llm_timeout_s", "llm_threads", "notes_language",
                 "cache_dir"):
        f = next(f for f in Settings.fields() if f.name == name)
        notes.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar=name.upper(),
                           type={"int": int, "float": float}.get(f.type, str), help=f.metadata["help"])

    exp = sub.add_parser("export", help="download a room's transcript, subtitles, notes or summary")
    exp.add_argument("room")
    exp.add_argument("--format", choices=("txt", "srt", "vtt", "json", "md"), default="txt")
    exp.add_argument("--server", default=DEFAULT_SERVER)
    exp.add_argument("--key", default=None, help="a private room's viewer key (or REALTIME_KEY)")
    exp.add_argument("-o", "--output", default=None, help="write to this file instead of standard output")

    up = sub.add_parser("upload", help="transcribe a recorded lecture into a room (notes, summary and exports "
                                       "as for a live one)")
    up.add_argument("file", help="the recording: any audio or video file FFmpeg reads")
    up.add_argument("--room", required=True)
    up.add_argument("--server", default=DEFAULT_SERVER)
    up.add_argument("--key", default=None, help="the room's speaker key or the admin key (or REALTIME_KEY)")
    up.add_argument("--language", default=None, help="spoken language code, default: detect")
    up.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    up.add_argument("--prompt", default="", help="course terms and context for the decoder")
    return parser


class CaptionPrinter:
    """Human output: finals as lines, the partial rewritten in place on a terminal."""

    def __init__(self, jsonl: bool):
        self.jsonl = jsonl
        self.tty = sys.stdout.isatty()
        self._partial_shown = False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.jsonl:
            print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        kind = event["type"]
        if kind == "final":
            self._clear()
            print(f"[{_clock(event['start'])}] {event['text']}", flush=True)
        elif kind == "translation":
            self._clear()
            shown = event["text"] if event["state"] == "done" else f"(untranslated: {event['reason']})"
            print(f"    {event['lang']}: {shown}", flush=True)
        elif kind == "partial" and self.tty:
            self._clear()
            text = (event["committed"] + " " + event["unstable"]).strip()
            sys.stdout.write(f"\x1b[2m… {text[-150:]}\x1b[0m")
            sys.stdout.flush()
            self._partial_shown = True
        elif kind == "error":
            self._clear()
            print(f"error {event['code']}: {event['message']}", file=sys.stderr, flush=True)

    def _clear(self) -> None:
        if self._partial_shown:
            sys.stdout.write("\r\x1b[2K")
            self._partial_shown = False


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}"


def _serve(args: argparse.Namespace) -> int:
    from realtime.server.run import run_server

    try:
        settings = Settings.from_sources(args=args)
    except ValueError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    return run_server(settings)


def _stream(args: argparse.Namespace) -> int:
    from realtime.audiofile import read_audio
    from realtime.client import stream_audio

    try:
        audio = read_audio(args.file)
    except (FileNotFoundError, ValueError) as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(stream_audio(args.server, args.room, audio, speed=args.speed, chunk_ms=args.chunk_ms,
                                          language=args.language, task=args.task, prompt=args.prompt,
                                          on_event=CaptionPrinter(args.jsonl), key=_key(args),
                                          takeover=args.takeover))
    except (TimeoutError, OSError) as exc:
        print(f"realtime: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    return 1 if any(e["type"] == "error" for e in result.events) else 0


def _listen(args: argparse.Namespace) -> int:
    from realtime.client import listen

    try:
        result = asyncio.run(listen(args.server, args.room, idle=args.idle, on_event=CaptionPrinter(args.jsonl),
                                    since=args.since, key=_key(args), translate=args.translate))
    except OSError as exc:
        print(f"realtime: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 1 if any(e["type"] == "error" for e in result.events) else 0


def _key(args: argparse.Namespace) -> str | None:
    """A key from the flag or REALTIME_KEY: the environment keeps it out of shell history and `ps`."""
    from realtime.config import client_key

    return args.key or client_key()


def _room(args: argparse.Namespace) -> int:
    from realtime.room_admin import room_command

    return room_command(args)


def _certs(args: argparse.Namespace) -> int:
    from realtime.certs import certs_command

    return certs_command(args)


def _llm(args: argparse.Namespace) -> int:
    from realtime.llm.process import LocalLLM, LocalLLMError, WeightsError
    from realtime.llm.weights import MODELS

    try:
        settings = Settings.from_sources(args=args)
    except ValueError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(settings.log_level.upper())
    model = settings.llm_model if settings.llm_model in MODELS else "local"
    local = LocalLLM(model, cache_dir=settings.cache_dir, threads=settings.llm_threads,
                     context=settings.llm_context, port=args.llm_port)

    async def serve() -> int:
        try:
            await local.start()
            print(f"realtime llm: {model} ({local.model.description}) serving on {local.base_url}", flush=True)
            print(f"  use it: realtime serve --llm-model {model} --llm-base-url {local.base_url}", flush=True)
            await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
        except (WeightsError, LocalLLMError) as exc:
            print(f"realtime: {exc}", file=sys.stderr)
            return 2
        finally:
            await asyncio.shield(local.stop())
        return 0

    import signal

    loop = asyncio.new_event_loop()
    main_task = loop.create_task(serve())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        return loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        return 0
    finally:
        loop.close()


def _export(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    from realtime.client import auth_headers, http_url

    url = f"{http_url(args.server)}/v1/rooms/{quote(args.room, safe='')}/export?format={args.format}"
    request = urllib.request.Request(url, headers=auth_headers(_key(args)))
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        print(f"realtime: {args.room}: HTTP {exc.code}: {detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"realtime: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "wb") as f:
            f.write(body)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    return 0


class ProgressBar:
    """A plain-text progress bar on a stream (stderr): redrawn in place on a terminal, otherwise a line at every
    tenth, so logs of a CI job stay short."""

    def __init__(self, out, width: int = 30):
        self.out, self.width = out, width
        self.tty = out.isatty()
        self._shown: tuple[str, int] | None = None

    def show(self, label: str, done: float, total: float, detail: str = "") -> None:
        fraction = min(1.0, done / total) if total > 0 else 0.0
        step = int(fraction * (self.width if self.tty else 10))
        if self._shown == (label, step):
            return
        self._shown = (label, step)
        filled = int(fraction * self.width)
        text = f"{label:<12} {fraction:4.0%} [{'#' * filled}{'.' * (self.width - filled)}] {detail}"
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self, message: str = "") -> None:
        if self.tty and self._shown is not None:
            self.out.write("\n")
        self._shown = None
        if message:
            self.out.write(message + "\n")
        self.out.flush()


# `realtime upload` exit codes: 0 transcribed; 1 the server could not be reached or failed; 2 the file cannot be
# read here; 3 the server refused the upload (key, room, size, format, a live room); 4 it was cancelled.
UPLOAD_EXIT = {"unreachable": 1, "failed": 1, "file": 2, "refused": 3, "cancelled": 4}


def _upload(args: argparse.Namespace) -> int:
    import os

    from realtime.client import UploadRefused, upload_file

    if not os.path.isfile(args.file):
        print(f"realtime: {args.file}: no such file", file=sys.stderr)
        return UPLOAD_EXIT["file"]
    bar = ProgressBar(sys.stderr)

    def on_line(line: dict[str, Any]) -> None:
        if line["type"] == "accepted":
            bar.done(f"uploaded {args.file}")
        if line.get("state") == "transcribing" or line["type"] in ("accepted", "progress"):
            bar.show("transcribing", line.get("done_s", 0.0), line.get("total_s", 0.0),
                     f"{_clock(line.get('done_s', 0))}/{_clock(line.get('total_s', 0))}, {line.get('finals', 0)} "
                     "finals")

    try:
        last = asyncio.run(upload_file(args.server, args.room, args.file, key=_key(args), language=args.language,
                                       task=args.task, prompt=args.prompt,
                                       on_sent=lambda n, total: bar.show("uploading", n, total,
                                                                         f"{n / 1e6:.1f}/{total / 1e6:.1f} MB"),
                                       on_line=on_line))
    except UploadRefused as exc:
        bar.done()
        print(f"realtime: upload into {args.room!r} refused (HTTP {exc.status} {exc.code}): {exc.message}"
              if exc.status != 200 else f"realtime: transcription failed ({exc.code}): {exc.message}",
              file=sys.stderr)
        return UPLOAD_EXIT["refused" if exc.status != 200 else "failed"]
    except (OSError, TimeoutError) as exc:
        bar.done()
        print(f"realtime: cannot reach {args.server} (or the connection broke): {exc}", file=sys.stderr)
        return UPLOAD_EXIT["unreachable"]
    except KeyboardInterrupt:
        bar.done()
        print("realtime: interrupted; the server stops the upload (finals so far are kept)", file=sys.stderr)
        return UPLOAD_EXIT["cancelled"]
    bar.done()
    if last["type"] == "cancelled":
        print(f"realtime: the upload was cancelled at {_clock(last.get('done_s', 0))} "
              f"({last.get('reason', 'cancelled')}); {last.get('finals', 0)} finals kept", file=sys.stderr)
        return UPLOAD_EXIT["cancelled"]
    print(f"realtime: {args.room}: {last.get('finals', 0)} finals from {_clock(last.get('total_s', 0))} of audio; "
          f"export with `realtime export {args.room}`", file=sys.stderr)
    return 0


def _notes(args: argparse.Namespace) -> int:
    from realtime.notes.transcript import run_cli

    return run_cli(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {"serve": _serve, "stream": _stream, "listen": _listen, "room": _room, "export": _export,
                "certs": _certs, "llm": _llm, "upload": _upload, "notes": _notes}
    return commands[args.command](args)
