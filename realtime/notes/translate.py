"""Caption translation for viewers (the asyncio shell around `realtime.core.translation`).

Each room with someone watching a caption language gets one worker task that takes the plan's jobs in order and
publishes a `translation` event per final and language. The LLM call goes through the notes service (`call`: the
same client, retries, the room's `translation` token pool and the server's daily cap), so a spent budget or an LLM
outage is one `failed` translation with its reason, never a held-up caption: finals are published before their jobs
exist, and nothing on the caption path awaits a translation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from realtime.core.protocol import Event, Final, Translation
from realtime.core.room import Room
from realtime.core.translation import (
    ANSWER_SCHEMA,
    InvalidTranslation,
    Job,
    TranslationPlan,
    answer_budget,
    check_translated_summary,
    parse_translation,
    summary_request,
    translation_request,
)
from realtime.notes.llm import LLMError
from realtime.notes.service import NoBudget, NotesService

log = logging.getLogger(__name__)
REASONS = ("llm_error", "no_budget", "invalid_answer")  # why a translation failed (`failed` in /healthz)


class Translations:
    def __init__(self, notes: NotesService, *, max_languages: int = 4):
        self.notes = notes
        self.max_languages = max_languages
        self._plans: dict[Room, TranslationPlan] = {}
        self._workers: dict[Room, asyncio.Task] = {}
        self._published_at: dict[tuple[Room, int, str], float] = {}  # (room, final id, lang) -> final sent at
        self.translated = 0
        self.failed: Counter[str] = Counter()
        self.latencies: list[float] = []  # final published -> its translation published, seconds
        self.tokens_by_language: Counter[str] = Counter()
        self._summaries: dict[tuple[str, str, str], asyncio.Future[str]] = {}  # (room, lang, original) -> made

    @property
    def available(self) -> bool:
        return self.notes.llm is not None and self.max_languages > 0

    def plan(self, room: Room) -> TranslationPlan:
        plan = self._plans.get(room)
        if plan is None:
            plan = self._plans[room] = TranslationPlan(limit=self.max_languages)
            plan.restore((final, lang) for lang, done in room.translations.items() for final in done)
            room.on_publish.append(lambda event: self._published(room, event))
            room.on_gone.append(lambda: self.forget(room))
        return plan

    def watch(self, room: Room, lang: str) -> None:
        """A listener wants captions in `lang` (TooManyLanguages past the room's limit)."""
        self.plan(room).watch(lang, room.finals)
        self._kick(room)

    def unwatch(self, room: Room, lang: str) -> None:
        plan = self._plans.get(room)
        if plan is not None:
            plan.unwatch(lang)

    async def summary(self, room: Room, markdown: str, lang: str) -> str:
        """The room's summary in `lang`, made once per summary and language however many ask at once (LLMError,
        NoBudget, InvalidTranslation when it cannot be made; a failure is not kept)."""
        key = (room.name, lang, markdown)
        task = self._summaries.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._summaries[key] = asyncio.ensure_future(self._summary(room, markdown, lang))
            while len(self._summaries) > 64:
                self._summaries.pop(next(iter(self._summaries)))
        return await asyncio.shield(task)

    async def _summary(self, room: Room, markdown: str, lang: str) -> str:
        answer = await self.notes.call(room, "translation", summary_request(markdown, lang),
                                        min(3000, 200 + 2 * len(markdown)), temperature=0.0)
        self.tokens_by_language[lang] += answer.tokens
        return check_translated_summary(markdown, answer.text)

    def forget(self, room: Room) -> None:
        self._plans.pop(room, None)
        for key in [k for k in self._summaries if k[0] == room.name]:
            del self._summaries[key]
        for key in [k for k in self._published_at if k[0] is room]:
            del self._published_at[key]
        worker = self._workers.pop(room, None)
        if worker is not None:
            worker.cancel()

    def _published(self, room: Room, event: Event) -> None:
        if isinstance(event, Final) and room in self._plans:  # numbered by now
            jobs = self._plans[room].on_final(event)
            for job in jobs:
                self._published_at[(room, job.final, job.lang)] = time.monotonic()
            if jobs:
                self._kick(room)

    def _kick(self, room: Room) -> None:
        if self._plans[room].queued() and (room not in self._workers or self._workers[room].done()):
            self._workers[room] = room_task = asyncio.get_running_loop().create_task(self._work(room))
            self.notes.rooms.track(room, room_task)

    async def _work(self, room: Room) -> None:
        plan = self._plans[room]
        while (job := plan.next_job()) is not None and not room.deleted:
            try:
                await self._translate(room, job)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the worker for everyone watching
                log.exception("room %s: translating final %d into %s failed", room.name, job.final, job.lang)
            finally:
                plan.finished(job)

    async def _translate(self, room: Room, job: Job) -> None:
        started = self._published_at.pop((room, job.final, job.lang), None)
        index = next((i for i in range(len(room.finals) - 1, -1, -1) if room.finals[i].id == job.final), None)
        if index is None:
            return
        final = room.finals[index]
        messages = translation_request(final, job.lang, room.finals[max(0, index - 3):index], room.glossary)
        state, text, reason = "done", "", ""
        try:
            answer = await self.notes.call(room, "translation", messages, answer_budget(final, job.lang),
                                            schema=ANSWER_SCHEMA, temperature=0.0)
            self.tokens_by_language[job.lang] += answer.tokens
            text = parse_translation(answer.text, final.text)
        except NoBudget:
            state, reason = "failed", "no_budget"
        except InvalidTranslation as exc:
            state, reason = "failed", "invalid_answer"
            log.info("room %s: translation of final %d into %s rejected: %s", room.name, final.id, job.lang, exc)
        except LLMError as exc:
            state, reason = "failed", "llm_error"
            log.warning("room %s: translation into %s failed: %s", room.name, job.lang, exc)
        if room.publish(Translation(final.id, job.lang, text, state, reason)) is None:
            return
        if state == "done":
            self.translated += 1
        else:
            self.failed[reason] += 1
        if started is not None and state == "done":
            self.latencies.append(time.monotonic() - started)
