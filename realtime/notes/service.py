"""Runs the notes of every room: when a room's scheduler says so, make a proposal and publish the change; and the
summaries and answers that people ask for.

With an LLM configured the proposal comes from it (bounded transcript window, edits to the current bullets as a
strict JSON answer, its `max_tokens` sized from the notes and the new text); otherwise, while
the LLM has not produced notes yet for the room, when it fails, or once a budget is spent, the extractive engine
fills in. Every LLM call is paid from a budget (`budget.LLMBudget`) reserved before the call: the room's `notes`
pool for its live notes and the summary at the end of its lecture, its `visitors` pool for questions and summaries
asked for over HTTP, and the server's daily cap for all. An LLM answer that is not usable (not JSON, the wrong
structure, unknown ids, cut off at max_tokens, ...) is rejected whole and counted by reason (`rejected`, and per
room for its `status`). Notes work happens off the event loop's critical path and
never holds up captions: a failure is logged and counted, and the notes stay as they were. Work done for a room is
tracked by the rooms registry (`Rooms.track`), so that deleting the room cancels it. The notes' state of each
room (`lecture.LectureNotes`) lives here, not in the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from realtime.core.protocol import Final, Notes, Summary
from realtime.core.room import Room
from realtime.notes.budget import POOLS, LLMBudget, NoBudget
from realtime.notes.catchup_live import CatchUps
from realtime.notes.extractive import extract
from realtime.notes.index import TranscriptIndex
from realtime.notes.lecture import LectureNotes
from realtime.notes.llm import Completion, LLMClient, LLMError, LLMTruncated
from realtime.notes.prompt import (
    ANSWER_SCHEMA,
    SCHEMA_NAME,
    build_request,
    complete_ops,
    estimate_tokens,
    ground,
    parse_ops,
    reconcile,
    relevant,
)
from realtime.notes.scheduler import NotesScheduler
from realtime.notes.state import REJECTIONS, InvalidNotes, NotesChange
from realtime.notes.study import StudyPanels, panels_markdown
from realtime.notes.summary import (
    ask_request,
    check_summary,
    cite_times,
    extractive_answer,
    extractive_summary,
    retrieve,
    summary_request,
)
from realtime.server.offload import Offload
from realtime.server.rooms import Rooms

log = logging.getLogger(__name__)
T = TypeVar("T")


class RoomDeleted(Exception):
    """The room was deleted while work for it was under way."""


def utc_day() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


class NotesService:
    def __init__(self, rooms: Rooms, llm: LLMClient | None = None, *, budget: LLMBudget | None = None,
                 offload: Offload | None = None, window_tokens: int = 3000, language: str = "",
                 max_bullets: int = 40, ask_max_tokens: int = 300, notes_interval_s: float = 60.0,
                 notes_min_words: int = 150, clock: Callable[[], float] = time.monotonic):
        self.clock = clock  # the scheduler's clock (benchmarks.notes replays on simulated time)
        self.rooms = rooms
        rooms.in_use.append(self._in_use)
        self.notes_interval_s = notes_interval_s
        self.notes_min_words = notes_min_words
        self._lectures: weakref.WeakKeyDictionary[Room, LectureNotes] = weakref.WeakKeyDictionary()
        self.llm = llm
        self.budget = budget or LLMBudget({"notes": 200_000, "visitors": 50_000, "translation": 500_000})
        self.offload = offload or Offload()
        self.window_tokens = window_tokens
        self.language = language
        self.max_bullets = max_bullets
        self.ask_max_tokens = ask_max_tokens
        self.updates = 0
        self.failures = 0
        self.refused = {"room": 0, "day": 0}  # LLM calls not made for want of budget
        self.rejected = dict.fromkeys(REJECTIONS, 0)  # LLM notes answers rejected, by reason
        self.last_latency_s = 0.0  # window closed -> notes event, of the latest update
        self.latencies: deque[float] = deque(maxlen=500)  # of the latest updates that ran, for /healthz
        self.dropped_ops = 0  # LLM edits dropped as unrelated to the transcript or repeated (prompt.relevant)
        self.salvaged = 0  # answers cut off at max_tokens whose complete ops were kept (prompt.complete_ops)
        self._indexes: dict[str, TranscriptIndex] = {}
        self.catchups = CatchUps(self)  # "catch me up" recaps, one per room at a time
        self.panels = StudyPanels(self)  # the study panels after each update, worded by the LLM if there is one

    async def run(self, tick_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(tick_s)
            for room in self.rooms:
                notes = self.of(room)
                if notes.schedule.due(self.clock()) and not notes.busy and not room.deleted:
                    self.rooms.track(room, asyncio.get_running_loop().create_task(self.update(room)))

    def of(self, room: Room) -> LectureNotes:
        """The room's notes, made from its own events the first time they are asked for."""
        notes = self._lectures.get(room)
        if notes is None:
            notes = LectureNotes.restore(room, NotesScheduler(self.notes_interval_s, self.notes_min_words),
                                         self.clock)
            room.on_publish.append(notes.published)
            self._lectures[room] = notes
        return notes

    def _in_use(self, room: Room) -> bool:
        notes = self._lectures.get(room)
        return notes is not None and notes.in_use()

    async def for_room(self, room: Room, work: Awaitable[T]) -> T:
        """Await `work` as a task the room tracks; RoomDeleted if the room is (or gets) deleted meanwhile."""
        if room.deleted:
            with contextlib.suppress(Exception):
                work.close()  # type: ignore[attr-defined]
            raise RoomDeleted(room.name)
        task = self.rooms.track(room, asyncio.ensure_future(work))
        try:
            return await task
        except asyncio.CancelledError:
            if room.deleted and task.cancelled():
                raise RoomDeleted(room.name) from None
            raise

    def forget(self, name: str) -> None:
        """A deleted room: its budget figures and index go too."""
        self.budget.forget(name)
        self._indexes.pop(name, None)
        self.catchups.forget(name)

    def rejected_in(self, room: Room) -> int:
        """LLM notes answers rejected for this room since it came into memory (its `status`'s notes_rejected)."""
        notes = self._lectures.get(room)
        return notes.rejected if notes is not None else 0

    def spent(self, room: Room) -> int:
        return self.budget.spent(room.name) if self.budget.known(room.name) else (
            room.record.llm_tokens_notes + room.record.llm_tokens_visitors + room.record.llm_tokens_translation)

    async def flush(self, room: Room) -> None:
        """At stop: bring the notes up to date with the whole lecture. Inline without an LLM (milliseconds); with
        one, in the background so that a slow LLM never holds up the end of the captions."""
        notes = self.of(room)
        if self.llm is None:
            for _ in range(100):
                if not notes.busy:
                    break
                await asyncio.sleep(0.05)
            with contextlib.suppress(RoomDeleted):
                await self.for_room(room, self._flush(room))
        else:
            notes.flushing = True  # the room stays in memory until this is done (Rooms.release)
            self.rooms.track(room, asyncio.get_running_loop().create_task(self._flush_later(room, notes)))

    async def _flush(self, room: Room) -> None:
        await self.update(room)
        if room.finals:
            await self.summarize(room, pool="notes")

    async def _flush_later(self, room: Room, notes: LectureNotes) -> None:
        try:
            while notes.busy:
                await asyncio.sleep(0.2)
            await self._flush(room)
        finally:
            notes.flushing = False

    # ---------------------------------------------------------------- LLM calls, paid from a budget

    async def call(self, room: Room, pool: str, messages: list[dict[str, str]], max_tokens: int, *,
                    schema: dict | None = None, schema_name: str = SCHEMA_NAME, stream: bool = False,
                    temperature: float | None = None, on_text: Callable[[str], None] | None = None) -> Completion:
        """One LLM call, its worst case reserved first and what it cost settled and stored after. With `schema` the
        answer is asked for as JSON of that shape (the client negotiates how), otherwise as text."""
        assert self.llm is not None
        day = utc_day()
        self._load(room, day)
        prompt = sum(estimate_tokens(m["content"]) for m in messages) + 8 * len(messages)
        max_tokens = min(max_tokens, self.llm.config.max_tokens)
        reservation = self.budget.reserve(room.name, pool, prompt + max_tokens, day)
        if isinstance(reservation, str):
            self.refused[reservation] += 1
            raise NoBudget("the server's daily LLM budget is spent" if reservation == "day"
                           else f"the room's LLM budget for {pool} is spent")
        used = prompt  # what a failed call is charged: the endpoint may have read the prompt
        try:
            answer = await self.llm.chat(messages, schema=schema, schema_name=schema_name,
                                         json_mode=None if schema is not None else False, stream=stream,
                                         max_tokens=max_tokens, temperature=temperature, on_text=on_text)
            used = answer.tokens or prompt + estimate_tokens(answer.text)
            return answer
        except LLMTruncated as exc:  # the endpoint wrote (and bills) max_tokens
            used = exc.completion.tokens or prompt + max_tokens
            raise
        finally:
            charged = self.budget.settle(reservation, used)
            self._persist(room, pool, day, charged)

    def _load(self, room: Room, day: str) -> None:
        if not self.budget.known(room.name):
            self.budget.load_room(room.name, {pool: getattr(room.record, f"llm_tokens_{pool}") for pool in POOLS})
        store = self.rooms.store
        if day != self.budget.day:
            self.budget.load_day(day, store.daily_tokens(day) if store is not None else 0)

    def _persist(self, room: Room, pool: str, day: str, tokens: int) -> None:
        if tokens <= 0:
            return
        setattr(room.record, f"llm_tokens_{pool}", getattr(room.record, f"llm_tokens_{pool}") + tokens)
        store = self.rooms.store
        if store is None:
            return
        try:
            store.add_llm_tokens(room.name, pool, tokens)
        except Exception:  # RoomGone (deleted meanwhile), a failing disk: the spend is still counted in memory
            log.info("room %s: storing LLM spend failed", room.name, exc_info=True)
        try:
            store.add_daily_tokens(day, tokens)
        except Exception:
            log.warning("storing the daily LLM spend failed", exc_info=True)

    # ---------------------------------------------------------------- summary and questions

    async def summarize(self, room: Room, pool: str = "visitors") -> str:
        """The summary of the lecture so far (Markdown), published as a `summary` event and kept for /summary; the
        stored one when it already covers every final (a summary is only made again when the transcript grew)."""
        finals = list(room.finals)
        notes = self.of(room)
        if notes.summary and notes.summary_finals == len(finals):
            return notes.summary
        source, markdown = "extractive", ""
        if self.llm is not None and finals:
            messages = summary_request(finals, notes.state.bullets, budget_tokens=self.window_tokens * 2,
                                       glossary=room.glossary, language=self.language or "the lecture's language")
            try:
                markdown, source = check_summary(  # temperature 0: a summary is to be faithful, not varied
                    (await self.call(room, pool, messages, self.llm.config.max_tokens, temperature=0.0)).text), "llm"
            except (LLMError, ValueError, NoBudget) as exc:
                self.failures += not isinstance(exc, NoBudget)
                log.warning("room %s: no LLM summary (%s); extractive summary instead", room.name, exc)
        if not markdown:
            markdown = await self.offload.run(extractive_summary, finals, list(notes.state.bullets), room.name)
        study = panels_markdown(notes)
        if study:
            markdown = f"{markdown.rstrip()}\n\n{study}"
        room.publish(Summary(source, len(finals), markdown))
        return markdown

    def _retrieve(self, name: str, finals: list[Final], question: str) -> list[Final]:
        """Runs on the offload thread: extend the room's index with the finals it has not seen, then search it."""
        index = self._indexes.setdefault(name, TranscriptIndex())
        for position in range(len(index), len(finals)):
            index.add(position, finals[position].text)
        return retrieve(index, finals, question)

    async def ask(self, room: Room, question: str) -> dict:
        """An answer grounded in the transcript so far, citing the segments (and their times) it used. Nothing in
        the transcript resembles the question: no LLM call, the answer says the lecture did not cover it."""
        excerpts = await self.offload.run(self._retrieve, room.name, list(room.finals), question)
        citations = [{"id": f.id, "start": f.start} for f in excerpts]
        if self.llm is not None and excerpts:
            try:
                answer = await self.call(room, "visitors", ask_request(question, excerpts), self.ask_max_tokens,
                                          stream=True)
                return {"answer": cite_times(answer.text.strip(), excerpts), "source": "llm", "citations": citations}
            except (LLMError, NoBudget) as exc:
                self.failures += not isinstance(exc, NoBudget)
                log.warning("room %s: no LLM answer (%s); extractive answer instead", room.name, exc)
        return {"answer": extractive_answer(excerpts), "source": "extractive", "citations": citations}

    # ---------------------------------------------------------------- notes

    async def update(self, room: Room) -> None:
        """Recompute the room's notes now (also used at stop, whatever the schedule says)."""
        notes = self.of(room)
        if notes.schedule.new_words == 0 or notes.busy or room.deleted:
            return
        notes.busy = True
        started = time.monotonic()
        notes.schedule.updated()
        finals = list(room.finals)
        try:
            change = await self._next(room, notes, finals)
        except (InvalidNotes, LLMError, NoBudget) as exc:
            self.failures += not isinstance(exc, NoBudget)
            log.warning("room %s: notes update rejected: %s", room.name, exc)
            await self.refresh_panels(room)  # offline: they do not wait for the LLM
            return
        finally:
            notes.busy = False
        notes.first_new = len(finals)
        self.last_latency_s = time.monotonic() - started
        self.latencies.append(self.last_latency_s)
        if change is not None and room.publish(Notes(change.version, change.source,
                                                     [b.to_dict() for b in change.bullets],
                                                     change.added, change.changed, change.removed)) is not None:
            self.updates += 1
        await self.refresh_panels(room)

    async def refresh_panels(self, room: Room) -> None:
        """The study panels made again from the transcript so far; the ones that changed are published."""
        await self.panels.refresh(room)

    async def _next(self, room: Room, notes: LectureNotes, finals: list[Final]) -> NotesChange | None:
        """The next version of the notes: the LLM's edits applied, or (while the LLM has not made the room's notes)
        extractive notes when it fails."""
        if self.llm is not None:
            fresh = notes.state.source != "llm"  # the LLM starts its notes over rather than editing extractive ones
            base = [] if fresh else notes.state.bullets
            request = build_request(base, finals, notes.first_new, budget_tokens=self.window_tokens,
                                    glossary=room.glossary, language=self.language or "the language of the lecture",
                                    next_id=f"b{notes.state.next_number()}", max_tokens=self.llm.config.max_tokens)
            try:
                try:
                    answer = await self.call(room, "notes", request.messages, request.max_tokens,
                                              schema=ANSWER_SCHEMA)
                    ops = parse_ops(answer.text, len(finals))
                except LLMTruncated as exc:  # the ops it finished are a smaller edit: keep them
                    ops = complete_ops(exc.completion.text, len(finals))
                    if not ops:
                        raise
                    self.salvaged += 1
                    log.info("room %s: kept the %d complete ops of an answer cut off at max_tokens", room.name,
                             len(ops))
                ops = reconcile(ops, base)
                if not self.language:  # notes in the lecture's language: they must share words with it
                    kept = relevant(ops, base, [finals[i].text for i in request.segment_ids if i < len(finals)])
                    self.dropped_ops += len(ops) - len(kept)
                    ops = kept
                ops = ground(ops, finals[notes.first_new:])
                if ops or not fresh:  # no edits to no notes: the extractive ones stay
                    return notes.state.apply_ops(ops, "llm", len(finals), base=base)
            except (LLMTruncated, InvalidNotes) as exc:
                self._reject(room, notes, "length" if isinstance(exc, LLMTruncated) else exc.reason, exc)
                if not fresh:
                    raise
                self.failures += 1
            except (LLMError, NoBudget):
                if not fresh:
                    raise  # keep the LLM's notes rather than replacing them with extractive ones
                self.failures += 1
                log.warning("room %s: LLM notes failed; extractive notes meanwhile", room.name, exc_info=True)
        segments = [(f.id, f.text) for f in finals]
        bullets = await asyncio.get_running_loop().run_in_executor(None, extract, segments, self.max_bullets)
        return notes.state.apply(bullets, "extractive", known_segments=len(finals))

    def _reject(self, room: Room, notes: LectureNotes, reason: str, exc: Exception) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        notes.rejected += 1
        notes.last_rejection = reason
        log.warning("room %s: LLM notes answer rejected (%s): %s", room.name, reason, exc)
