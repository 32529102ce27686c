"""The study panels' engine: after each notes update the offline panels are made again from the whole transcript,
on the offload thread, and each panel whose items changed is published as a `panel` event.

The panels are found offline whether or not an LLM writes the notes: each costs milliseconds to tens of
milliseconds on a half-hour lecture (benchmarks/README.md, "Study panels"), and stays grounded in segment ids by
construction. With an LLM, the new glossary terms and tasks are then worded by it in one small request
(`study_prompt`), and their panels say `source: "llm"`. A proposal that fails validation (`panels.InvalidPanel`)
is logged and the panel stays as it was.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from realtime.core.export import clock
from realtime.core.protocol import Final, Panel
from realtime.core.room import Room
from realtime.notes.budget import NoBudget
from realtime.notes.catchup_live import Notes
from realtime.notes.lecture import LectureNotes
from realtime.notes.llm import LLMError, LLMTruncated
from realtime.notes.outline import offline_outline
from realtime.notes.panels import PANELS, InvalidPanel, markdown
from realtime.notes.study_prompt import (
    STUDY_SCHEMA,
    STUDY_SCHEMA_NAME,
    answer_tokens,
    complete_entries,
    overlay,
    parse_study,
    pending,
    study_request,
)
from realtime.notes.tasks import offline_tasks
from realtime.notes.terms import offline_terms
from realtime.server.offload import Busy

log = logging.getLogger(__name__)


def offline_panels(finals: list[Final], glossary: str = "") -> dict[str, list[dict[str, Any]]]:
    """Every panel's items for the transcript so far (runs on the offload thread)."""
    return {"terms": offline_terms(finals, glossary), "tasks": offline_tasks(finals),
            "outline": offline_outline(finals)}


def publish_panels(room: Room, lecture: LectureNotes, proposals: dict[str, list[dict[str, Any]]],
                   llm: set[str] | frozenset[str] = frozenset()) -> int:
    """Adopt each panel's proposal and publish the ones that changed (`llm`: the panels the LLM worded); how many
    were published."""
    published = 0
    for name in PANELS:
        if name not in proposals:
            continue
        try:
            change = lecture.panels[name].apply(proposals[name], "llm" if name in llm else "extractive",
                                                len(room.finals))
        except InvalidPanel as exc:
            log.warning("room %s: %s panel rejected: %s", room.name, name, exc)
            continue
        if change is not None and room.publish(Panel(change.panel, change.version, change.source, change.items,
                                                      change.added, change.changed, change.removed)) is not None:
            published += 1
    return published


def panels_markdown(lecture: LectureNotes) -> str:
    """The panels as Markdown sections, for the summary and the Markdown export ("" while all are empty)."""
    return markdown({name: state.items for name, state in lecture.panels.items()}, clock)


class StudyPanels:
    """The panels of every room, refreshed after each notes update (`NotesService.refresh_panels`)."""

    def __init__(self, service: Notes):
        self.service = service
        self.calls = 0  # LLM calls wording panel items
        self.tokens = 0
        self.failures = 0
        self.truncated = 0  # answers cut off at max_tokens (their finished entries kept)
        self.latencies: deque[float] = deque(maxlen=500)

    def _count(self, tokens: int, started: float) -> None:
        self.calls += 1
        self.tokens += tokens
        self.latencies.append(time.monotonic() - started)

    async def refresh(self, room: Room) -> None:
        service = self.service
        if not room.finals or room.deleted:
            return
        try:
            proposals = await service.offload.run(offline_panels, list(room.finals), room.glossary)
        except Busy:
            log.info("room %s: panels not refreshed (the offload thread is busy); next update", room.name)
            return
        lecture = service.of(room)
        # The notes come first: the panels are worded once the LLM's notes exist for the room, so that a small
        # model's few calls go to the notes (the 0.5B's live test made no LLM notes with both competing).
        if service.llm is not None and not lecture.refining and lecture.state.source == "llm":
            lecture.refining = True
            try:
                await self._refine(room, lecture, proposals)
            finally:
                lecture.refining = False
        publish_panels(room, lecture, proposals, overlay(proposals, lecture.refined))

    async def _refine(self, room: Room, lecture: LectureNotes, proposals: dict[str, list[dict]]) -> None:
        """The LLM's wording of the panel items it has not worded yet (`study_prompt`), paid from the room's notes
        budget; on failure they keep their offline text until the next refresh."""
        todo = pending(proposals, lecture.refined)
        if not (todo["terms"] or todo["tasks"]):
            return
        started = time.monotonic()
        try:
            answer = await self.service.call(room, "notes",
                                             study_request(todo, self.service.language or "the lecture's language"),
                                             answer_tokens(todo), schema=STUDY_SCHEMA, schema_name=STUDY_SCHEMA_NAME,
                                             temperature=0.0)
            lecture.refined.update(parse_study(answer.text, todo))
            self._count(answer.tokens, started)
        except LLMTruncated as exc:  # the finished entries are kept; the others are asked for next time
            lecture.refined.update(complete_entries(exc.completion.text, todo))
            self._count(exc.completion.tokens, started)
            self.truncated += 1
        except (LLMError, NoBudget, ValueError) as exc:
            self.failures += 1
            log.warning("room %s: study panels not worded by the LLM (%s); offline text meanwhile", room.name, exc)
