"""`realtime room create | list | delete`: rooms managed in the server's database directly.

Whoever can write the database file administers the server anyway, so the CLI needs no admin key and works while
the server is stopped; a running server finds a room made here on its first use (SQLite WAL lets both processes
share the file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from realtime.config import Settings
from realtime.core.access import hash_key, new_key, slug
from realtime.core.protocol import ProtocolError, check_room
from realtime.core.records import ASK_POLICIES, RoomExists, RoomRecord, Store
from realtime.storage.sqlite import open_store


def make_room(store: Store, title: str, name: str, private: bool, ask: str = "anyone") -> dict:
    """Create a room with fresh keys and the `ask` policy (one of ASK_POLICIES, else ValueError, checked before any
    key is made); the keys are returned this once and only their hashes are stored."""
    if ask not in ASK_POLICIES:
        raise ValueError(f"ask must be one of {', '.join(ASK_POLICIES)}, not {ask!r}")
    speaker_key = new_key("sk_")
    viewer_key = new_key("vk_") if private else None
    store.add_room(RoomRecord(name, title, time.time(), hash_key(speaker_key),
                              hash_key(viewer_key) if viewer_key else None, ask=ask))
    return {"room": name, "title": title, "private": private, "ask": ask, "speaker_key": speaker_key,
            "viewer_key": viewer_key}


def room_links(created: dict, base: str) -> dict:
    """Where people go: the viewer link carries a private room's viewer key in the fragment, which browsers never
    send to a server (so it is in no log); the speaker key is typed into the lecturer page."""
    viewer = f"{base}/?room={created['room']}" + (f"#key={created['viewer_key']}" if created["viewer_key"] else "")
    return {**created, "viewer_url": viewer, "speaker_url": f"{base}/speak?room={created['room']}"}


def room_command(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_sources()
    except ValueError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    store = open_store(args.db or settings.db, synchronous=settings.db_synchronous)
    try:
        if args.action == "create":
            return _create(args, settings, store)
        if args.action == "list":
            _list(store)
            return 0
        if not store.delete_room(args.name):
            print(f"realtime: no room {args.name!r}", file=sys.stderr)
            return 1
        print(f"deleted {args.name}")
        return 0
    finally:
        store.close()


def _list(store: Store) -> None:
    """One line per room: name, kind, who may ask questions, lecture time, title (tab-separated)."""
    for rec in store.list_rooms():
        kind = "open" if rec.speaker_key_hash is None else "private" if rec.viewer_key_hash else "public"
        print(f"{rec.name}\t{kind}\task={rec.ask}\t{rec.audio_s / 60:.1f} min\t{rec.title}")


def _create(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    try:
        name = check_room(args.name or slug(args.title), settings.max_room_name)
    except ProtocolError as exc:
        print(f"realtime: {exc.message}", file=sys.stderr)
        return 2
    ask = getattr(args, "ask", None) or "anyone"  # the flag may be absent from an older parser
    try:
        created = make_room(store, args.title, name, args.private, ask=ask)
    except ValueError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    except RoomExists:
        print(f"realtime: room {name!r} exists already", file=sys.stderr)
        return 1
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    scheme = "https" if settings.tls_cert else "http"
    links = room_links(created, (args.public_url or settings.public_url or f"{scheme}://{host}:{settings.port}"))
    if args.json:
        print(json.dumps(links, indent=1))
        return 0
    print(f"room:         {links['room']}  ({links['title']})")
    print(f"speaker key:  {links['speaker_key']}   (shown once; type it into the lecturer page, or "
          f"REALTIME_KEY=… realtime stream)")
    if links["viewer_key"]:
        print(f"viewer key:   {links['viewer_key']}   (shown once)")
    print(f"questions:    {links['ask']}   (who may ask: anyone | viewers, i.e. holders of a room key | nobody)")
    print(f"viewer link:  {links['viewer_url']}")
    print(f"lecturer page: {links['speaker_url']}")
    return 0
