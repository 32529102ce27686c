"""The notes of one lecture as versioned bullets, and the change from one version to the next (sans-I/O).

A notes engine proposes a complete list of bullets; `NotesState.apply` keeps bullets whose content did not change
untouched, numbers the new version, and reports what was added, changed and removed, so clients patch instead of
re-rendering and a bullet is only rewritten when its content changes. Invalid proposals are rejected whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_BULLETS = 60
MAX_TEXT = 400


@dataclass(frozen=True)
class Bullet:
    id: str
    text: str  # Markdown (emphasis for key terms)
    refs: tuple[int, ...] = ()  # final segment ids the bullet came from
    parent: str | None = None  # a sub-point of this bullet

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["refs"] = list(self.refs)
        return d


@dataclass(frozen=True)
class NotesChange:
    version: int
    source: str
    bullets: list[Bullet]
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class InvalidNotes(ValueError):
    """A proposal that would corrupt the notes; the current version stays."""


def validate(bullets: list[Bullet], known_segments: int) -> None:
    if len(bullets) > MAX_BULLETS:
        raise InvalidNotes(f"more than {MAX_BULLETS} bullets")
    ids = [b.id for b in bullets]
    if len(set(ids)) != len(ids):
        raise InvalidNotes("duplicate bullet ids")
    for b in bullets:
        if not b.id or not b.text.strip() or len(b.text) > MAX_TEXT:
            raise InvalidNotes(f"bullet {b.id!r} is empty or too long")
        if b.parent is not None and (b.parent not in ids or b.parent == b.id):
            raise InvalidNotes(f"bullet {b.id!r} has an unknown parent")
        if any(not 0 <= r < known_segments for r in b.refs):
            raise InvalidNotes(f"bullet {b.id!r} cites a segment that does not exist")


class NotesState:
    def __init__(self) -> None:
        self.version = 0
        self.source = ""
        self.bullets: list[Bullet] = []

    @classmethod
    def from_event(cls, data: dict[str, Any]) -> NotesState:
        """The state a stored `notes` event describes (a restart brings the room's notes back from it)."""
        state = cls()
        state.version, state.source = int(data["version"]), str(data["source"])
        state.bullets = [Bullet(b["id"], b["text"], tuple(b.get("refs") or ()), b.get("parent"))
                         for b in data["bullets"]]
        return state

    def apply(self, proposal: list[Bullet], source: str, known_segments: int) -> NotesChange | None:
        """Adopt a proposal; None when nothing changed. Raises InvalidNotes and keeps the current notes."""
        validate(proposal, known_segments)
        old = {b.id: b for b in self.bullets}
        new_ids = {b.id for b in proposal}
        added = [b.id for b in proposal if b.id not in old]
        changed = [b.id for b in proposal if b.id in old and old[b.id] != b]
        removed = [i for i in old if i not in new_ids]
        if not (added or changed or removed) and [b.id for b in proposal] == [b.id for b in self.bullets]:
            return None
        self.version += 1
        self.source = source
        self.bullets = list(proposal)
        return NotesChange(self.version, source, list(self.bullets), added, changed, removed)
