"""Catch me up, live: one recap per room at a time, shared by everyone who asks while it is fresh.

300 students pressing "catch me up" at once cost one LLM call: the first request starts a recap, every request
while it is being written follows the same one (each reader gets the pieces written so far, then the rest as they
arrive), and a finished recap is served from the cache for `ttl_s` seconds, or for as long as no new final came.
Without an LLM, when it fails, or once the room's `visitors` budget is spent, the recap is extractive (`catchup`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from realtime.core.room import Room
from realtime.notes.budget import NoBudget
from realtime.notes.catchup import catchup_request, check_catchup, covered, extractive_catchup
from realtime.notes.lecture import LectureNotes
from realtime.notes.llm import LLMError

log = logging.getLogger(__name__)


class Notes(Protocol):
    """What a recap needs of the notes service (`service.NotesService`, which owns the CatchUps)."""

    rooms: Any
    llm: Any
    language: str
    offload: Any

    def of(self, room: Room) -> LectureNotes: ...

    async def call(self, room: Room, pool: str, messages: list[dict[str, str]], max_tokens: int,
                   **options: Any) -> Any: ...

MAX_TOKENS = 400
# The request: notes, outline and the latest transcript. 2,500 tokens took the bundled 1.5B 82 s to read on one
# core (2026-12-04, benchmarks.notes); the notes already hold the lecture so far, the transcript is for "right now".
BUDGET_TOKENS = 1500


@dataclass
class Recap:
    finals: int  # how many finals it covers
    covered: tuple[float, float]  # lecture seconds
    started_at: float | None  # wall-clock time the lecture began (None: unknown)
    made_at: float = field(default_factory=time.monotonic)
    source: str = "extractive"
    parts: list[str] = field(default_factory=list)  # the text as written so far (streamed from an LLM)
    markdown: str = ""  # the finished recap
    done: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, piece: str) -> None:
        self.parts.append(piece)
        self._changed.set()

    def finish(self, markdown: str, source: str) -> None:
        self.markdown, self.source, self.done = markdown, source, True
        self._changed.set()

    async def follow(self) -> AsyncIterator[str]:
        """The pieces of the text as they are written (those written so far at once); ends when it is done."""
        sent = 0
        while True:
            while sent < len(self.parts):
                sent += 1
                yield self.parts[sent - 1]
            if self.done:
                return
            self._changed.clear()  # everything written is sent: wait for more (no await since the check)
            await self._changed.wait()


class CatchUps:
    def __init__(self, service: Notes, ttl_s: float = 30.0):
        self.service = service
        self.ttl_s = ttl_s
        self.made = 0  # recaps made (not served from the cache)
        self.served = 0
        self._recaps: dict[str, Recap] = {}

    def fresh(self, room: Room) -> bool:
        """A recap of the room is being written, or was written recently enough to serve (see the docstring)."""
        recap = self._recaps.get(room.name)
        return recap is not None and (not recap.done or recap.finals == len(room.finals)
                                      or time.monotonic() - recap.made_at < self.ttl_s)

    def get(self, room: Room) -> tuple[Recap, bool]:
        """The room's recap, and whether it came from the cache; a new one is started if none is fresh."""
        self.served += 1
        if self.fresh(room):
            return self._recaps[room.name], True
        finals = list(room.finals)
        recap = Recap(len(finals), covered(finals), self.service.of(room).started_at or room.record.created_at or None)
        self._recaps[room.name] = recap
        self.made += 1
        self.service.rooms.track(room, asyncio.get_running_loop().create_task(self._make(room, recap)))
        return recap, False

    def forget(self, name: str) -> None:
        self._recaps.pop(name, None)

    async def _make(self, room: Room, recap: Recap) -> None:
        service = self.service
        lecture = service.of(room)
        finals = list(room.finals)[:recap.finals]
        outline, tasks = lecture.panels["outline"].items, lecture.panels["tasks"].items
        try:
            if service.llm is not None and finals:
                messages = catchup_request(finals, lecture.state.bullets, outline, budget_tokens=BUDGET_TOKENS,
                                           language=service.language or "the lecture's language")
                try:
                    answer = await service.call(room, "visitors", messages, MAX_TOKENS, stream=True,
                                                temperature=0.0, on_text=recap.write)
                    recap.finish(check_catchup(answer.text, recap.covered[1]), "llm")
                    return
                except (LLMError, NoBudget, ValueError) as exc:  # the reader still gets a recap
                    log.warning("room %s: no LLM recap (%s); extractive instead", room.name, exc)
            recap.finish(await service.offload.run(extractive_catchup, finals, outline, tasks), "extractive")
        finally:
            if not recap.done:  # cancelled (room deleted) or the offload refused: readers must not wait forever
                recap.finish(extractive_catchup(finals, outline, tasks), "extractive")
                self._recaps.pop(room.name, None)
