"""The study panels beside the captions, as versioned parts of a lecture's notes (sans-I/O).

Three panels change as the lecture goes on, each a list of items with stable ids, versioned like the bullets
(`state.NotesState`): `terms` (the running glossary), `tasks` (assignments, readings, exams and deadlines the
lecturer says out loud) and `outline` (topic sections with start times). `PanelState.apply` adopts a new list,
numbers the version and reports what was added, changed and removed, so a client patches its panel; nothing is
published when nothing changed. The fourth panel, catch me up, is made on demand for whoever asks (`catchup`).

Item shapes (every one has `id`, `refs`: the final ids it is grounded in, the first mention first, and `start`: the
lecture time of that first one, in seconds, for its time link):
- terms:   {id, term, text (a one-line explanation, or the sentence that defines or first uses it), refs, start}
- tasks:   {id, text, kind (reading | assignment | exam | deadline), due (the date phrase as said, or ""), refs,
            start}
- outline: {id, title, refs, start}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PANELS = ("terms", "tasks", "outline")
MAX_ITEMS = {"terms": 60, "tasks": 40, "outline": 40}
MAX_CHARS = 400
TASK_KINDS = ("reading", "assignment", "exam", "deadline")


@dataclass(frozen=True)
class PanelChange:
    panel: str
    version: int
    source: str
    items: list[dict[str, Any]]
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class InvalidPanel(ValueError):
    """A proposed panel that would show something unfounded (unknown refs, duplicate ids, over-long text)."""


def validate(panel: str, items: list[dict[str, Any]], known_segments: int) -> None:
    if panel not in PANELS:
        raise InvalidPanel(f"unknown panel {panel!r}")
    if len(items) > MAX_ITEMS[panel]:
        raise InvalidPanel(f"more than {MAX_ITEMS[panel]} {panel}")
    ids = [item.get("id") for item in items]
    if len(set(ids)) != len(ids) or not all(isinstance(i, str) and i for i in ids):
        raise InvalidPanel(f"{panel}: missing or duplicate ids")
    text_key = "title" if panel == "outline" else "text"
    for item in items:
        refs = item.get("refs")
        if not refs or not all(isinstance(r, int) and 0 <= r < known_segments for r in refs):
            raise InvalidPanel(f"{panel} item {item['id']!r} cites no segment or one that does not exist")
        text = item.get(text_key)
        if not isinstance(item.get("start"), int | float):
            raise InvalidPanel(f"{panel} item {item['id']!r} has no start time")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_CHARS:
            raise InvalidPanel(f"{panel} item {item['id']!r}: empty or over-long {text_key}")
        if panel == "tasks" and item.get("kind") not in TASK_KINDS:
            raise InvalidPanel(f"task {item['id']!r}: kind must be one of {', '.join(TASK_KINDS)}")


class PanelState:
    def __init__(self, panel: str) -> None:
        self.panel = panel
        self.version = 0
        self.source = ""
        self.items: list[dict[str, Any]] = []

    @classmethod
    def from_event(cls, data: dict[str, Any]) -> PanelState:
        """The state a stored `panel` event describes (a restart brings the room's panels back from it)."""
        state = cls(str(data["panel"]))
        state.version, state.source, state.items = int(data["version"]), str(data["source"]), list(data["items"])
        return state

    def apply(self, items: list[dict[str, Any]], source: str, known_segments: int) -> PanelChange | None:
        """Adopt `items`; None when nothing changed. Raises InvalidPanel and keeps the current items."""
        validate(self.panel, items, known_segments)
        old = {item["id"]: item for item in self.items}
        new_ids = {item["id"] for item in items}
        added = [item["id"] for item in items if item["id"] not in old]
        changed = [item["id"] for item in items if item["id"] in old and old[item["id"]] != item]
        removed = [i for i in old if i not in new_ids]
        if not (added or changed or removed) and [i["id"] for i in items] == [i["id"] for i in self.items]:
            return None
        self.version += 1
        self.source = source
        self.items = [dict(item) for item in items]
        return PanelChange(self.panel, self.version, source, list(self.items), added, changed, removed)


def markdown(panels: dict[str, list[dict[str, Any]]], clock: Callable[[float], str]) -> str:
    """The panels as Markdown sections, each line with its time link (the export and the summary carry them);
    `clock(seconds)` formats a time."""
    out: list[str] = []
    if panels.get("outline"):
        out += ["## Outline", *(f"- [{clock(s['start'])}] {s['title']}" for s in panels["outline"]), ""]
    if panels.get("terms"):
        out += ["## Key terms", *(f"- **{t['term']}**: {t['text']} [{clock(t['start'])}]" for t in panels["terms"]),
                ""]
    if panels.get("tasks"):
        lines = []
        for t in panels["tasks"]:
            due = f" (due: {t['due']})" if t.get("due") else ""
            lines.append(f"- {t['kind'].capitalize()}: {t['text']}{due} [{clock(t['start'])}]")
        out += ["## Assignments and deadlines", *lines, ""]
    return "\n".join(out)
