"""A room's downloads (transcript JSON, txt, SRT, WebVTT, JSON, Markdown), made off the event loop and cached.

Laying out the subtitles of a 6-hour lecture takes seconds of CPU; every viewer that presses "download" at the end
of a lecture asks for the same bytes. So each download is made once per state of the room — its name and creation
time, how many finals it has, its notes version and its summary — on the offload thread, and kept in a small cache
bounded in entries and bytes. A deleted room's entries are dropped with it.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict

from realtime.core import export
from realtime.core.protocol import Final
from realtime.core.room import Room
from realtime.notes.lecture import LectureNotes
from realtime.notes.panels import markdown
from realtime.server.offload import Offload


class ExportCache:
    def __init__(self, max_entries: int = 32, max_bytes: int = 128 << 20):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self._items: OrderedDict[tuple, str] = OrderedDict()

    def get(self, key: tuple) -> str | None:
        text = self._items.get(key)
        if text is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return text

    def put(self, key: tuple, text: str) -> None:
        if len(text) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        self.bytes -= len(old) if old is not None else 0
        self._items[key] = text
        self.bytes += len(text)
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= len(dropped)

    def forget(self, room: str) -> None:
        for key in [k for k in self._items if k[0] == room]:
            self.bytes -= len(self._items.pop(key))


def state_key(room: Room, notes: LectureNotes, fmt: str, lang: str | None = None) -> tuple:
    return (room.name, room.record.created_at, fmt, len(room.finals), notes.state.version, notes.summary_finals,
            len(notes.summary), lang, len(room.translations.get(lang, ())) if lang else 0,
            tuple(p.version for p in notes.panels.values()))


def translated(finals: list[Final], translations: dict[int, tuple[int, str]], lang: str) -> list[Final]:
    """The finals with their text in `lang` where a translation was made (the original where it failed or is not
    there yet), without word timings (they belong to the original words)."""
    out = []
    for final in finals:
        entry = translations.get(final.id)
        data = json.loads(entry[1]) if entry else None
        out.append(dataclasses.replace(final, text=data["text"], language=lang, words=[])
                   if data and data.get("state") == "done" else final)
    return out


def render(room_name: str, title: str, fmt: str, finals: list[Final], final_texts: list[str], bullets: list[dict],
           summary: str, lang: str | None = None, translations: dict[int, tuple[int, str]] | None = None,
           panels: dict[str, list[dict]] | None = None) -> str:
    """The text of one download (runs on the offload thread, from a snapshot of the room); with `lang`, the
    transcript in that caption language."""
    if lang is not None:
        finals = translated(finals, translations or {}, lang)
        final_texts = [json.dumps({"type": "final", **dataclasses.asdict(f)}, ensure_ascii=False) for f in finals]
    if fmt == "transcript":  # the finals exactly as published: their stored JSON texts, joined without re-encoding
        text = " ".join(f.text for f in finals)
        return (f'{{"room":{json.dumps(room_name)},"finals":[{",".join(final_texts)}],'
                f'"text":{json.dumps(text, ensure_ascii=False)}}}')
    if fmt == "json":
        return export.to_json(room_name, title, finals, bullets, summary, panels)
    if fmt == "md":
        return export.to_markdown(title, bullets, summary, finals, markdown(panels or {}, export.clock))
    return {"txt": export.to_txt, "srt": export.to_srt, "vtt": export.to_vtt}[fmt](finals)


async def download(room: Room, notes: LectureNotes, fmt: str, cache: ExportCache, offload: Offload,
                   lang: str | None = None) -> str:
    key = state_key(room, notes, fmt, lang)
    text = cache.get(key)
    if text is None:
        text = await offload.run(render, room.name, room.record.title or room.name, fmt, list(room.finals),
                                 room.final_texts(), [b.to_dict() for b in notes.state.bullets], notes.summary,
                                 lang, dict(room.translations.get(lang, {})) if lang else None,
                                 {name: p.items for name, p in notes.panels.items()})
        cache.put(key, text)
    return text
