"""Runs the notes of every room: when a room's scheduler says so, make a proposal and publish the change.

With an LLM configured the proposal comes from it (bounded transcript window, strict JSON answer); otherwise, while
the LLM has not produced notes yet for the room, when it fails, or once the room's token budget is spent, the
extractive engine fills in. Notes work happens off the event loop's critical path and never holds up captions: a
failure is logged and counted, and the notes stay as they were.
"""

from __future__ import annotations

import asyncio
import logging
import time

from realtime.notes.extractive import extract
from realtime.notes.llm import LLMClient, LLMError
from realtime.notes.prompt import build_request, parse_answer
from realtime.notes.state import Bullet, InvalidNotes
from realtime.notes.summary import (
    ask_request,
    check_summary,
    extractive_answer,
    extractive_summary,
    retrieve,
    summary_request,
)
from realtime.protocol import Notes, Summary
from realtime.rooms import Room, Rooms

log = logging.getLogger(__name__)


class NotesService:
    def __init__(self, rooms: Rooms, llm: LLMClient | None = None, *, window_tokens: int = 3000,
                 room_token_budget: int = 200_000, language: str = "", max_bullets: int = 40):
        self.rooms = rooms
        self.llm = llm
        self.window_tokens = window_tokens
        self.room_token_budget = room_token_budget
        self.language = language
        self.max_bullets = max_bullets
        self.updates = 0
        self.failures = 0
        self.last_latency_s = 0.0  # window closed -> notes event, of the latest update

    async def run(self, tick_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(tick_s)
            for room in self.rooms:
                if room.notes_schedule.due(time.monotonic()) and not room.notes_busy:
                    asyncio.get_running_loop().create_task(self.update(room))

    async def flush(self, room: Room) -> None:
        """At stop: bring the notes up to date with the whole lecture. Inline without an LLM (milliseconds); with
        one, in the background so that a slow LLM never holds up the end of the captions."""
        if self.llm is None:
            for _ in range(100):
                if not room.notes_busy:
                    break
                await asyncio.sleep(0.05)
            await self.update(room)
            if room.finals:
                await self.summarize(room)
        else:
            room.flushing = True  # the room stays in memory until this is done (server.release)
            asyncio.get_running_loop().create_task(self._flush_later(room))

    async def _flush_later(self, room: Room) -> None:
        try:
            while room.notes_busy:
                await asyncio.sleep(0.2)
            await self.update(room)
            if room.finals:
                await self.summarize(room)
        finally:
            room.flushing = False

    async def summarize(self, room: Room) -> str:
        """The end-of-lecture summary (Markdown), published as a `summary` event and kept for /summary."""
        finals = list(room.finals)
        source, markdown = "extractive", ""
        if self.llm is not None and finals and room.llm_tokens < self.room_token_budget:
            messages = summary_request(finals, room.notes.bullets, budget_tokens=self.window_tokens * 2,
                                       glossary=room.glossary, language=self.language or "the lecture's language")
            try:
                text, tokens = await self._complete_text(messages)
                room.llm_tokens += tokens
                markdown, source = check_summary(text), "llm"
            except (LLMError, ValueError) as exc:
                self.failures += 1
                log.warning("room %s: LLM summary failed (%s); extractive summary instead", room.name, exc)
        if not markdown:
            markdown = extractive_summary(finals, room.notes.bullets, room.name)
        room.summary = markdown
        room.publish(Summary(source, len(finals), markdown))
        return markdown

    async def ask(self, room: Room, question: str) -> dict:
        """An answer grounded in the transcript so far, citing the segments (and their times) it used."""
        finals = list(room.finals)
        excerpts = retrieve(finals, question)
        citations = [{"id": f["id"], "start": f["start"]} for f in excerpts]
        if self.llm is not None and excerpts and room.llm_tokens < self.room_token_budget:
            try:
                text, tokens = await self._complete_text(ask_request(question, excerpts), stream=True)
                room.llm_tokens += tokens
                return {"answer": text.strip(), "source": "llm", "citations": citations}
            except LLMError as exc:
                self.failures += 1
                log.warning("room %s: LLM answer failed (%s); extractive answer instead", room.name, exc)
        return {"answer": extractive_answer(excerpts), "source": "extractive", "citations": citations}

    async def _complete_text(self, messages: list[dict[str, str]], stream: bool = False) -> tuple[str, int]:
        assert self.llm is not None
        return await self.llm.complete(messages, json_mode=False, stream=stream)

    async def update(self, room: Room) -> None:
        """Recompute the room's notes now (also used at stop, whatever the schedule says)."""
        if room.notes_schedule.new_words == 0 or room.notes_busy:
            return
        room.notes_busy = True
        started = time.monotonic()
        room.notes_schedule.updated()
        finals = list(room.finals)
        try:
            proposal, source = await self._propose(room, finals)
            change = room.notes.apply(proposal, source, known_segments=len(finals))
        except (InvalidNotes, LLMError) as exc:
            self.failures += 1
            log.warning("room %s: notes update rejected: %s", room.name, exc)
            return
        finally:
            room.notes_busy = False
        room.notes_first_new = len(finals)
        self.last_latency_s = time.monotonic() - started
        if change is not None:
            self.updates += 1
            room.publish(Notes(change.version, change.source, [b.to_dict() for b in change.bullets],
                               change.added, change.changed, change.removed))

    async def _propose(self, room: Room, finals: list[dict]) -> tuple[list[Bullet], str]:
        if self.llm is not None and room.llm_tokens >= self.room_token_budget and room.notes.source == "llm":
            raise LLMError("the room's LLM token budget is spent; its notes stay as they are")
        if self.llm is not None and room.llm_tokens < self.room_token_budget:
            request = build_request(room.notes.bullets if room.notes.source == "llm" else [], finals,
                                    room.notes_first_new, budget_tokens=self.window_tokens, glossary=room.glossary,
                                    language=self.language or "the language of the lecture")
            try:
                text, tokens = await self.llm.complete(request.messages)
                room.llm_tokens += tokens or request.tokens
                return parse_answer(text, len(finals)), "llm"
            except (LLMError, InvalidNotes):
                if room.notes.source == "llm":
                    raise  # keep the LLM's notes rather than replacing them with extractive ones
                self.failures += 1
                log.warning("room %s: LLM notes failed; extractive notes meanwhile", room.name, exc_info=True)
        segments = [(f["id"], f["text"]) for f in finals]
        bullets = await asyncio.get_running_loop().run_in_executor(None, extract, segments, self.max_bullets)
        return bullets, "extractive"
