"""The study panels' engine: after each notes update the offline panels are made again from the whole transcript,
on the offload thread, and each panel whose items changed is published as a `panel` event.

The panels are made offline whether or not an LLM writes the notes: each costs tens to hundreds of milliseconds on
a half-hour lecture (benchmarks/README.md, "Study panels") and no tokens, and stays grounded in segment ids by
construction. A proposal that fails validation (`panels.InvalidPanel`) is logged and the panel stays as it was.
"""

from __future__ import annotations

import logging
from typing import Any

from realtime.core.export import clock
from realtime.core.protocol import Final, Panel
from realtime.core.room import Room
from realtime.notes.lecture import LectureNotes
from realtime.notes.outline import offline_outline
from realtime.notes.panels import PANELS, InvalidPanel, markdown
from realtime.notes.tasks import offline_tasks
from realtime.notes.terms import offline_terms

log = logging.getLogger(__name__)


def offline_panels(finals: list[Final], glossary: str = "") -> dict[str, list[dict[str, Any]]]:
    """Every panel's items for the transcript so far (runs on the offload thread)."""
    return {"terms": offline_terms(finals, glossary), "tasks": offline_tasks(finals),
            "outline": offline_outline(finals)}


def publish_panels(room: Room, lecture: LectureNotes, proposals: dict[str, list[dict[str, Any]]],
                   source: str = "extractive") -> int:
    """Adopt each panel's proposal and publish the ones that changed; how many were published."""
    published = 0
    for name in PANELS:
        if name not in proposals:
            continue
        try:
            change = lecture.panels[name].apply(proposals[name], source, len(room.finals))
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
